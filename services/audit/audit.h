/*
 * audit.h — magnetar-audit: the encrypted, chained, epoch-sealed security
 * event log (design: docs/audit.md). Shared types first, then prototypes
 * grouped by file. Only store.c includes sqlite3.h.
 */
#ifndef MAGNETAR_AUDIT_H
#define MAGNETAR_AUDIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.pb-c.h"
#include "common/svc.h"

#define AUDIT_NFIELDS 7 /* action actor target ip request_id outcome detail */
#define AUDIT_KEY 32    /* AES-256 and chain keys */
#define AUDIT_HASH 32   /* SHA-256 / HMAC-SHA256 */
#define AUDIT_NONCE 12  /* 96-bit GCM nonce: 4-byte block salt + 8-byte counter */
#define AUDIT_TAG 16    /* GCM tag */
#define AUDIT_SEALED(n) ((n) + AUDIT_NONCE + AUDIT_TAG) /* stored size of a field */
#define AUDIT_IX 16                                     /* blind index bytes (truncated HMAC) */
#define AUDIT_PUB 32                                    /* Ed25519 public key */
#define AUDIT_SIG 64                                    /* Ed25519 signature */
#define AUDIT_FIELD_MAX 4096
#define AUDIT_KEYS_MAX 32
#define AUDIT_KEY_ID_MAX 32

/* Epochs end at whichever comes first (docs/audit.md, "Epochs"). */
#define AUDIT_EPOCH_MS (10u * 60u * 1000u)
#define AUDIT_EPOCH_EVENTS 1000000u
/* Nonce counters reserved per durable write: ~12 s of 50k events/s x 7. */
#define AUDIT_NONCE_BLOCK (1u << 22)

enum audit_field {
	AUDIT_F_ACTION,
	AUDIT_F_ACTOR,
	AUDIT_F_TARGET,
	AUDIT_F_IP,
	AUDIT_F_REQUEST_ID,
	AUDIT_F_OUTCOME,
	AUDIT_F_DETAIL,
};

/* A break records, in the chain itself, that audit found the stored log
 * cut or its tip not matching at start (docs/audit.md, "Breaks"). */
enum audit_kind {
	AUDIT_KIND_EVENT = 0,
	AUDIT_KIND_HEAD = 1,
	AUDIT_KIND_GENESIS = 2,
	AUDIT_KIND_BREAK = 3
};

/* One row of `records` as the code sees it. Pointers belong to whoever
 * filled the struct (a group arena, or the statement during a callback). */
struct audit_rec {
	uint64_t id, epoch, time_ms, received_ms, seq;
	int kind;
	const char *source, *producer, *instance, *key_id; /* events only */
	const unsigned char *field[AUDIT_NFIELDS];         /* nonce || ciphertext || tag */
	size_t field_len[AUDIT_NFIELDS];
	unsigned char action_ix[AUDIT_IX], actor_ix[AUDIT_IX];
	const unsigned char *body; /* heads and genesis: the signed statement */
	size_t body_len;
	const unsigned char *sig; /* heads: Ed25519 over body */
	size_t sig_len;
	unsigned char content[AUDIT_HASH]; /* SHA-256 of all of the above */
	unsigned char hash[AUDIT_HASH];    /* chain: SHA-256(prev hash || content) */
	unsigned char mac[AUDIT_HASH];     /* HMAC(epoch chain key, id || hash) */
};

/* ---- keyring.c ---------------------------------------------------------- */

struct audit_key {
	char id[AUDIT_KEY_ID_MAX + 1];
	unsigned char key[AUDIT_KEY]; /* AES-256-GCM */
	unsigned char ix[AUDIT_KEY];  /* blind-index key, derived from key */
};

/* Keys only ever grow (old records must stay readable), so readers take
 * `n` with acquire and read keys[0..n) without a lock; the last is current. */
struct audit_keyring {
	struct audit_key keys[AUDIT_KEYS_MAX];
	_Atomic size_t n;
};

/* Parses "id:base64key,id2:base64key" (commas or whitespace between
 * entries); each key 32 bytes, ids [A-Za-z0-9._-]{1,32} and unique.
 * 0 or ERR_CONFIG with one sentence in err (never key material). */
int keyring_parse(const char *text, struct audit_keyring *kr, char *err, size_t errlen);
const struct audit_key *keyring_current(const struct audit_keyring *kr);
const struct audit_key *keyring_find(const struct audit_keyring *kr, const char *id);
size_t keyring_count(const struct audit_keyring *kr);
/* Installs the keys of `next` that `kr` lacks. Every key of `kr` must be in
 * `next` with the same bytes and position (a ring only grows): else ERR_CONFIG. */
int keyring_extend(struct audit_keyring *kr, const struct audit_keyring *next, char *err,
                   size_t errlen);
void keyring_wipe(struct audit_keyring *kr);
/* Reads a keyring file (at most 64 KiB). */
int keyring_load_file(const char *path, struct audit_keyring *kr, char *err, size_t errlen);
/* Creates `path` (0600) with one fresh key, or appends a fresh key named
 * k<N+1> to it; the whole file is replaced atomically. */
int keyring_generate(const char *path, char *err, size_t errlen);

/* ---- crypto.c ----------------------------------------------------------- */

extern const char *const crypto_field_names[AUDIT_NFIELDS];

/* Reused OpenSSL contexts (docs/dependencies.md: a reused context is 2-3x cheaper).
 * One per thread at a time: take from and give back to a crypto_pool. */
struct crypto;
struct crypto_pool;
int crypto_pool_new(struct crypto_pool **out);
void crypto_pool_free(struct crypto_pool *p);
struct crypto *crypto_get(struct crypto_pool *p); /* NULL on no memory */
void crypto_put(struct crypto_pool *p, struct crypto *c);

/* Encrypts one field of record `id` under `k` with `nonce` into out
 * (AUDIT_SEALED(len) bytes). The associated data binds key id, record id
 * and field name. 0 or ERR_INTERNAL. */
int crypto_seal(struct crypto *c, const struct audit_key *k, const unsigned char nonce[AUDIT_NONCE],
                uint64_t id, enum audit_field f, const void *pt, size_t len, unsigned char *out);
/* Decrypts into out (len - 28 bytes + 1; NUL-terminated). 0 or ERR_PERM
 * when the tag does not verify (tampered, moved, or wrong key). */
int crypto_open(struct crypto *c, const struct audit_key *k, uint64_t id, enum audit_field f,
                const unsigned char *in, size_t len, char *out);
/* Blind index of a field value: HMAC(k->ix, field || 0 || value), truncated. */
int crypto_index(struct crypto *c, const struct audit_key *k, enum audit_field f, const char *value,
                 unsigned char out[AUDIT_IX]);
/* Content hash of a record (every column except hash and mac). */
int crypto_content(struct crypto *c, struct audit_rec *r);
/* SHA-256 of a short buffer, for fingerprints. */
int crypto_sha256(const void *buf, size_t len, unsigned char out[AUDIT_HASH]);

/* ---- nonce.c ------------------------------------------------------------ */

/* Per-key nonce counters with a persisted high-water mark (docs/audit.md). */
struct nonce_alloc;
int nonce_new(struct pool *pool, uint64_t block, struct nonce_alloc **out);
void nonce_free(struct nonce_alloc *a);
/* Takes `count` consecutive counters of key `key_id`; *base is the first
 * nonce. Reserves a new block durably first when needed. Thread-safe. */
int nonce_take(struct nonce_alloc *a, const char *key_id, uint64_t count,
               unsigned char base[AUDIT_NONCE]);
/* base + i, for the i-th nonce of a take (never crosses a block). */
void nonce_at(const unsigned char base[AUDIT_NONCE], uint64_t i, unsigned char out[AUDIT_NONCE]);

/* ---- chain.c ------------------------------------------------------------ */

/* The evolving secrets of the open epoch: in audit.chain (0600), never in
 * the database. mac_key and sign_seed evolve one-way at each seal. */
struct chain_secrets {
	uint64_t epoch;
	unsigned char mac_key[AUDIT_KEY];
	unsigned char sign_seed[AUDIT_KEY];
};

int chain_file_read(const char *path, struct chain_secrets *s); /* ERR_NOTFOUND if absent */
/* Replaces the file atomically and durably, then overwrites the old
 * file's bytes in place, so the previous epoch's secrets leave the disk. */
int chain_file_write(const char *path, const struct chain_secrets *s);
/* Fresh random secrets for epoch 0. */
int chain_genesis_secrets(struct chain_secrets *s);
/* k' = HMAC(k, "next") for both secrets; epoch + 1. */
int chain_evolve(const struct chain_secrets *cur, struct chain_secrets *next);
int chain_public_key(const unsigned char seed[AUDIT_KEY], unsigned char pub[AUDIT_PUB]);
int chain_sign(const unsigned char seed[AUDIT_KEY], const void *msg, size_t len,
               unsigned char sig[AUDIT_SIG]);
bool chain_sig_ok(const unsigned char pub[AUDIT_PUB], const void *msg, size_t len,
                  const unsigned char *sig, size_t siglen);
/* Reused contexts for linking and MAC'ing with one epoch's chain key. */
struct chain_ctx;
int chain_ctx_new(const unsigned char mac_key[AUDIT_KEY], struct chain_ctx **out);
void chain_ctx_free(struct chain_ctx *c); /* wipes the key; accepts NULL */
/* hash = SHA-256("magnetar-audit chain v1" || prev || content). */
int chain_link(struct chain_ctx *c, const unsigned char prev[AUDIT_HASH],
               const unsigned char content[AUDIT_HASH], unsigned char out[AUDIT_HASH]);
/* HMAC(key, tag || id || hash): tag "rec" for records, "tip" for the tip. */
int chain_mac(struct chain_ctx *c, const char *tag, uint64_t id,
              const unsigned char hash[AUDIT_HASH], unsigned char out[AUDIT_HASH]);

/* Head and genesis statements (fixed binary layouts, see chain.c). */
#define CHAIN_HEAD_LEN 104
#define CHAIN_GENESIS_LEN 64
struct chain_head {
	uint64_t epoch, first_id, records, time_ms;
	unsigned char prev[AUDIT_HASH];
	unsigned char next_pub[AUDIT_PUB];
};
void chain_head_encode(const struct chain_head *h, unsigned char out[CHAIN_HEAD_LEN]);
int chain_head_decode(const unsigned char *in, size_t len, struct chain_head *h);
struct chain_genesis {
	uint64_t time_ms, epoch_ms, epoch_events;
	unsigned char pub[AUDIT_PUB];
};
void chain_genesis_encode(const struct chain_genesis *g, unsigned char out[CHAIN_GENESIS_LEN]);
int chain_genesis_decode(const unsigned char *in, size_t len, struct chain_genesis *g);
/* The statement of a break record: what was found, where the first bad
 * record is, how many ids right before the break are skipped (never used
 * again), the tip as it was found, and the epochs the log goes from and to
 * (different when whole epochs were cut: the log goes on in the chain
 * file's epoch, whose public key `pub` then stands in for the missing
 * head's certificate). */
#define CHAIN_BREAK_LEN 136
enum {
	CHAIN_BREAK_TRUNCATED = 1, /* the tip names records that are gone */
	CHAIN_BREAK_MISSING_TIP,   /* records but no tip row */
	CHAIN_BREAK_TIP_MISMATCH,  /* the tip's hash or epoch is not the last record's */
	CHAIN_BREAK_BAD_TIP_MAC,   /* the tip lacks the chain key's MAC */
	CHAIN_BREAK_AFTER_TIP,     /* records past the tip */
};
struct chain_break {
	uint64_t reason, first_bad, skipped, tip_id, tip_epoch, time_ms, from_epoch, to_epoch;
	unsigned char tip_hash[AUDIT_HASH];
	unsigned char pub[AUDIT_PUB];
};
void chain_break_encode(const struct chain_break *b, unsigned char out[CHAIN_BREAK_LEN]);
int chain_break_decode(const unsigned char *in, size_t len, struct chain_break *b);
/* The Verify reason of a break ("truncated", ...). */
const char *chain_break_reason(uint64_t reason);

/* ---- store.c: the only file that includes sqlite3.h --------------------- */

extern const struct pool_schema store_schema;

/* A write transaction on the writer connection, durable on commit
 * (synchronous=FULL for audit's commits: an ack means on disk). */
struct store_tx;
int store_tx_begin(struct pool *pool, struct store_tx **out);
int store_tx_insert(struct store_tx *tx, const struct audit_rec *r);
int store_tx_set_tip(struct store_tx *tx, uint64_t id, const unsigned char hash[AUDIT_HASH],
                     uint64_t epoch, const unsigned char mac[AUDIT_HASH]);
int store_tx_commit(struct store_tx *tx); /* frees tx either way */
void store_tx_rollback(struct store_tx *tx);

/* Highest stored sequence of (source, instance), 0 when none. */
int store_max_seq(struct pool *pool, const char *source, const char *instance, uint64_t *max);
/* The stored event (source, instance, seq) handed to fn (pointers valid
 * during the call only); *found false, fn not called, when there is none. */
int store_find_seq(struct pool *pool, const char *source, const char *instance, uint64_t seq,
                   void (*fn)(const struct audit_rec *r, void *arg), void *arg, bool *found);

/* What recovery needs to continue the chain. */
struct store_state {
	uint64_t last_id; /* 0: empty log */
	unsigned char last_hash[AUDIT_HASH];
	uint64_t last_epoch;
	int last_kind;
	uint64_t head_id;        /* last head record, 0 if none */
	uint64_t head_epoch;     /* the epoch it sealed */
	uint64_t open_epoch;     /* after the last head, or moved on by a break */
	uint64_t epoch_first_id; /* the open epoch's first record */
	uint64_t epoch_events;   /* events of the open epoch */
	uint64_t epoch_first_ms; /* received time of its first record, 0 if none */
	uint64_t events;         /* all events */
	uint64_t breaks;         /* break records (findings recorded at start) */
};
int store_state(struct pool *pool, struct store_state *st);

/* Reserves [*start, *start + block) of key_id's counter durably. */
int store_nonce_reserve(struct pool *pool, const char *key_id, uint64_t block, uint64_t *start);

/* Number of stored events. */
int store_count(struct pool *pool, uint64_t *count);

/* Query: rows of kind event, filtered, in id order; fn returns non-zero to stop. */
struct store_query {
	const unsigned char (*action_ix)[AUDIT_IX]; /* n_ix entries, or NULL: any action */
	const unsigned char (*actor_ix)[AUDIT_IX];  /* n_ix entries, or NULL: any actor */
	size_t n_ix;
	uint64_t since_ms, until_ms; /* [since, until); until 0 = none */
	uint64_t after_id;           /* cursor: 0 = from the start */
	bool oldest_first;
	uint32_t limit;
};
int store_query(struct pool *pool, const struct store_query *q,
                int (*fn)(const struct audit_rec *r, void *arg), void *arg);

/* Walks every record in id order inside one read transaction. `snap` runs
 * twice before the first record: with NULL just before the snapshot is
 * taken, and with the tip row (has_tip false when absent) right after it,
 * so a caller can hold a lock across the moment the snapshot is fixed. */
struct store_tip {
	bool has_tip;
	uint64_t id, epoch;
	unsigned char hash[AUDIT_HASH], mac[AUDIT_HASH];
};
int store_walk(struct pool *pool, void (*snap)(const struct store_tip *tip, void *arg),
               int (*fn)(const struct audit_rec *r, void *arg), void *arg);
/* The tip row alone (has_tip false when absent). */
int store_tip_read(struct pool *pool, struct store_tip *tip);

/* Plaintext rows left by schema v1 (renamed legacy_events): read a batch of
 * one producer after `after_id`, or drop the table once empty. */
struct store_legacy {
	uint64_t last_id;
	char source[80], producer[80], instance[80];
	Magnetar__AuditEvent *events;
	Magnetar__AuditEvent **ptrs;
	size_t n;
};
int store_legacy_read(struct pool *pool, uint64_t after_id, size_t max, struct store_legacy *out);
void store_legacy_free(struct store_legacy *l);
int store_legacy_drop(struct pool *pool);

/* ---- ingest.c: sequencing, encryption, chaining, group commit ----------- */

struct audit_opts {
	uint64_t epoch_ms;       /* 0: AUDIT_EPOCH_MS */
	uint64_t epoch_events;   /* 0: AUDIT_EPOCH_EVENTS */
	uint64_t nonce_block;    /* 0: AUDIT_NONCE_BLOCK */
	int crypto_threads;      /* encryption off the writer thread; 0: 2 */
	bool pipeline;           /* group commit thread; false: each Append inline */
	const char *chain_path;  /* audit.chain; NULL: secrets in memory only (tests) */
	const char *anchor_path; /* where genesis writes the off-box anchor, or NULL */
	const char *events_url;  /* Tail publisher, or NULL */
	const char *keys_path;   /* keyring file RotateKey re-reads, or NULL */
	bool keys_generated;     /* keys_path is audit's own development file */
};

struct ingest;
struct events_pub;

/* The answer to a batch refused for a sequence conflict (AppendReply). */
#define INGEST_CONFLICT_MESSAGE                                                                    \
	"a sequence number of this batch is stored with other content: send it again "             \
	"under a new instance id"

struct audit_state {
	struct pool *pool;
	struct audit_opts opts;
	struct audit_keyring keys;
	struct crypto_pool *crypto;
	struct nonce_alloc *nonces;
	struct events_pub *pub;
	struct ingest *ing;
	/* The open epoch's secrets. `mu` guards them against Verify's copy. */
	pthread_mutex_t mu;
	struct chain_secrets secrets;
	unsigned char genesis_fp[AUDIT_HASH];
	_Atomic uint64_t events;  /* stored events (Stats) */
	_Atomic uint64_t dups;    /* duplicates (same content) acknowledged, not stored again */
	_Atomic uint64_t refused; /* events of batches refused for a sequence conflict */
	_Atomic uint64_t breaks;  /* break records in the log (integrity findings) */
	_Atomic uint64_t groups;  /* transactions committed */
	_Atomic uint64_t sealed;  /* epochs sealed by this process */
	_Atomic uint64_t epoch;   /* open epoch (Stats) */
	_Atomic bool seal_requested;
	pthread_mutex_t keys_mu; /* serialises keyring reloads */
};

struct audit {
	struct svc svc;         /* first: the generic Ping/Stats handlers use it */
	struct audit_state *st; /* audit_open; NULL in tests that build the struct by hand */
};

/* Opens the log over a->svc.pool with `keys` (copied; the caller wipes its
 * own), recovering or creating the chain. 0 or an error with one sentence
 * in err. */
int audit_open(struct audit *a, const struct audit_keyring *keys, const struct audit_opts *opts,
               char *err, size_t errlen);
/* Stops the pipeline (every queued Append is answered first), frees. */
void audit_close(struct audit *a);

int ingest_new(struct audit_state *st, struct ingest **out);
/* Starts the group-commit thread and the crypto threads. */
int ingest_start(struct ingest *ing);
/* Stops the thread after answering everything queued; frees. Accepts NULL. */
void ingest_free(struct ingest *ing);
/* Reloads the sequencing state (next id, epoch, chain tip) from audit.db
 * and st->secrets; nothing may be in flight. */
int ingest_recover(struct ingest *ing);

/* Appends a break record stating `b` after skipping b->skipped ids (never
 * to be used again); *id is the break's. Only while nothing is in flight
 * (at open, before the pipeline starts). */
int ingest_break(struct ingest *ing, const struct chain_break *b, uint64_t *id);

/* Stores one validated batch under `source`: synchronously (inline, or
 * waiting for the pipeline), filling out's counts and high-water mark. 0,
 * ERR_EXISTS (a sequence stored with other content: refused whole, see
 * AppendReply) or an error. */
int ingest_append_sync(struct audit_state *st, const char *source,
                       const Magnetar__AppendRequest *req, Magnetar__AppendReply *out);
/* Hands a validated batch to the pipeline, which answers `call` after the
 * commit. ERR_UNAVAIL when no pipeline runs (then answer it yourself). */
int ingest_append_async(struct audit_state *st, const char *source, struct rpc_call *call,
                        const Magnetar__AppendRequest *req);
/* Seals the open epoch now (RotateKey) and waits up to timeout_ms.
 * *sealed is the epoch sealed. */
int ingest_seal_now(struct audit_state *st, int timeout_ms, uint64_t *sealed);

/* ---- tail.c -------------------------------------------------------------- */

/* Publishes the events just committed (heads in `recs` are skipped; evs[i]
 * is the plaintext of recs[i]) on topic "audit.appended". */
void tail_publish_events(struct audit_state *st, const struct audit_rec *recs,
                         const Magnetar__AuditEvent *const *evs, size_t n);
/* Publishes a committed epoch head on topic "audit.sealed". */
void tail_publish_head(struct audit_state *st, const struct audit_rec *head,
                       const struct chain_head *h);

/* ---- append.c ------------------------------------------------------------ */

/* Validates and stores one batch under the caller's authenticated identity.
 * 0, ERR_INVAL for a malformed batch, or a store error. */
int append_store(struct audit *a, struct rpc_call *call, const Magnetar__AppendRequest *req,
                 Magnetar__AppendReply *out);
void append_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
/* The audit state of `a`; for a struct built by hand (unit tests of the
 * outbox), an ephemeral one with an in-memory key (logged loudly). */
struct audit_state *append_state(struct audit *a);

/* ---- query.c ------------------------------------------------------------- */

void query_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
/* The Query method without the RPC: fills out (free with query_reply_fini).
 * 0, ERR_INVAL (bad cursor or limit), ERR_PERM (a record failed its tag;
 * *bad_id names it) or a store error. */
int query_run(struct audit_state *st, const Magnetar__QueryRequest *req, Magnetar__QueryReply *out,
              uint64_t *bad_id);
void query_reply_fini(Magnetar__QueryReply *out);

/* ---- verify.c ------------------------------------------------------------ */

void verify_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
/* Walks the whole log; out->reason etc. point to static strings. */
int verify_run(struct audit_state *st, const char *anchor_hex, Magnetar__VerifyReply *out);
/* Frees what verify_run allocated in out (detail, genesis_fingerprint). */
void verify_reply_fini(Magnetar__VerifyReply *out);

/* ---- rotate.c ------------------------------------------------------------ */

void rotate_handle(struct rpc_call *call, const ProtobufCMessage *input, void *arg);
int rotate_run(struct audit_state *st, bool generate, Magnetar__RotateKeyReply *out, char *err,
               size_t errlen);

/* ---- service.c ----------------------------------------------------------- */

/* Audit and AuditLog merged into one descriptor, served on audit's socket. */
const ProtobufCServiceDescriptor *service_descriptor(void);

#endif
