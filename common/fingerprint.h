/*
 * fingerprint.h — the key of the session fingerprint hashes (fip, fua, fhd
 * claims), shared by auth, which puts them in tokens, and every gateway,
 * which recomputes them per request to score a session without an RPC.
 */
#ifndef MAGNETAR_FINGERPRINT_H
#define MAGNETAR_FINGERPRINT_H

struct conf;
struct sandbox_rules;

/*
 * Fills key[32] from MAGNETAR_FINGERPRINT_KEY(_FILE) (its SHA-256, so any
 * string works). Without it, outside production, a random key is created
 * once in <MAGNETAR_DATA_DIR>/fingerprint.key (0600) and read by every
 * process of that data dir, with a warning. 0, ERR_CONFIG or ERR_IO.
 */
int fingerprint_key_load(const struct conf *c, unsigned char key[32]);

/*
 * For a program that holds the key (auth, every gateway), at start before
 * its sandbox closes: without MAGNETAR_FINGERPRINT_KEY, outside production,
 * creates the shared development key file now, while nothing stands in the
 * way, and lets `r` read it. 0, or an error (the set full, the file not made).
 */
int fingerprint_prepare(const struct conf *c, struct sandbox_rules *r);

/* Keyed hash of one fingerprint value ("ip", "ua" or "hd" as `label`): the
 * first 16 bytes of HMAC-SHA256(key, label NUL value), as 32 hex + NUL.
 * Keyed, so an IP cannot be recovered by hashing all 2^32 of them. */
void fingerprint_hash(const unsigned char key[32], const char *label, const char *value,
                      char out[33]);

#endif
