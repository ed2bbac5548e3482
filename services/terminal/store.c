/*
 * store.c — terminal.db: its schema. For now only the audit outbox; the
 * service's own tables arrive with its issue as further migrations.
 */

#include "common/outbox.h"
#include "common/pool.h"
#include "services/terminal/terminal.h"

static const char *const store_migrations[] = {
    outbox_migration,
};

const struct pool_schema store_schema = {store_migrations,
                                         sizeof(store_migrations) / sizeof(store_migrations[0])};
