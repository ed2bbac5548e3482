/*
 * store.c — gateway.db: for now the audit outbox (the gateway records its
 * own security events through it); idempotency keys join it with the
 * gateway hardening work as a further migration.
 */
#include "common/outbox.h"
#include "common/pool.h"
#include "gateway/gateway.h"

static const char *const store_migrations[] = {
    outbox_migration,
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};
