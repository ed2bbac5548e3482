/*
 * audit_crypto_test.c — the audit service's primitives: keyring parsing
 * (the last id is current; bad rings refused without echoing key bytes),
 * field encryption round trip and what the associated data binds, the
 * chain secrets' one-way evolution and file erasure, and GCM nonces that
 * stay unique over 10^6 encryptions across a simulated restart.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/pool.h"
#include "services/audit/audit.h"

#define K1 "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2 "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

static void test_keyring_parse(void **state)
{
	struct audit_keyring kr;
	char err[256];
	(void)state;

	assert_int_equal(keyring_parse(K1 "," K2, &kr, err, sizeof(err)), 0);
	assert_int_equal(keyring_count(&kr), 2);
	assert_string_equal(keyring_current(&kr)->id, "k2");
	assert_non_null(keyring_find(&kr, "k1"));
	assert_null(keyring_find(&kr, "k3"));
	assert_int_equal(keyring_parse("\n " K2 "\n" K1 "\n", &kr, err, sizeof(err)), 0);
	assert_string_equal(keyring_current(&kr)->id, "k1");
	/* Refusals name the entry, never the key material. */
	assert_int_equal(keyring_parse("", &kr, err, sizeof(err)), ERR_CONFIG);
	assert_int_equal(keyring_parse("k1AAECAwQF", &kr, err, sizeof(err)), ERR_CONFIG);
	assert_int_equal(
	    keyring_parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd", &kr, err, sizeof(err)),
	    ERR_CONFIG); /* 30 bytes */
	assert_null(strstr(err, "AAEC"));
	assert_int_equal(keyring_parse(K1 "," K1, &kr, err, sizeof(err)), ERR_CONFIG);
	assert_non_null(strstr(err, "twice"));
	assert_int_equal(keyring_parse("k 1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", &kr, err,
	                               sizeof(err)),
	                 ERR_CONFIG);
	assert_int_equal(
	    keyring_parse("k$:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", &kr, err, sizeof(err)),
	    ERR_CONFIG);
	keyring_wipe(&kr);
}

static void test_keyring_generate_file(void **state)
{
	char dir[] = "/tmp/audit_crypto_test.XXXXXX", path[64], err[256];
	struct audit_keyring kr;
	struct stat st;
	(void)state;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/audit.keys", dir);
	assert_int_equal(keyring_generate(path, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(keyring_load_file(path, &kr, err, sizeof(err)), 0);
	assert_int_equal(keyring_count(&kr), 1);
	assert_int_equal(keyring_generate(path, err, sizeof(err)), 0);
	assert_int_equal(keyring_load_file(path, &kr, err, sizeof(err)), 0);
	assert_int_equal(keyring_count(&kr), 2);
	assert_string_equal(keyring_current(&kr)->id, "k2");
	keyring_wipe(&kr);
	unlink(path);
	rmdir(dir);
}

static void test_field_round_trip_and_binding(void **state)
{
	struct audit_keyring kr;
	struct crypto_pool *p;
	struct crypto *c;
	unsigned char nonce[AUDIT_NONCE] = {1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 9};
	unsigned char ct[AUDIT_SEALED(64)];
	const char *pt = "alice\n\x1b[2Jbob\x7f";
	char out[65], err[128];
	size_t n = strlen(pt);
	(void)state;

	assert_int_equal(keyring_parse(K1 "," K2, &kr, err, sizeof(err)), 0);
	assert_int_equal(crypto_pool_new(&p), 0);
	assert_non_null(c = crypto_get(p));
	assert_int_equal(crypto_seal(c, &kr.keys[0], nonce, 42, AUDIT_F_ACTOR, pt, n, ct), 0);
	assert_memory_equal(ct, nonce, AUDIT_NONCE);
	assert_memory_not_equal(ct + AUDIT_NONCE, pt, n);
	assert_int_equal(crypto_open(c, &kr.keys[0], 42, AUDIT_F_ACTOR, ct, AUDIT_SEALED(n), out),
	                 0);
	assert_string_equal(out, pt);
	/* Another record id, field or key: the tag fails, nothing leaks out. */
	assert_int_equal(crypto_open(c, &kr.keys[0], 43, AUDIT_F_ACTOR, ct, AUDIT_SEALED(n), out),
	                 ERR_PERM);
	assert_int_equal(crypto_open(c, &kr.keys[0], 42, AUDIT_F_TARGET, ct, AUDIT_SEALED(n), out),
	                 ERR_PERM);
	assert_int_equal(crypto_open(c, &kr.keys[1], 42, AUDIT_F_ACTOR, ct, AUDIT_SEALED(n), out),
	                 ERR_PERM);
	ct[AUDIT_SEALED(n) - 1] ^= 0x80; /* the tag itself */
	assert_int_equal(crypto_open(c, &kr.keys[0], 42, AUDIT_F_ACTOR, ct, AUDIT_SEALED(n), out),
	                 ERR_PERM);
	assert_int_equal(crypto_open(c, &kr.keys[0], 42, AUDIT_F_ACTOR, ct, 10, out), ERR_PERM);
	/* The empty string is a field too. */
	assert_int_equal(crypto_seal(c, &kr.keys[1], nonce, 7, AUDIT_F_IP, "", 0, ct), 0);
	assert_int_equal(crypto_open(c, &kr.keys[1], 7, AUDIT_F_IP, ct, AUDIT_SEALED(0), out), 0);
	assert_string_equal(out, "");
	/* Blind indexes: equal for equal values under one key, else different. */
	unsigned char a[AUDIT_IX], b[AUDIT_IX];
	assert_int_equal(crypto_index(c, &kr.keys[0], AUDIT_F_ACTOR, "alice", a), 0);
	assert_int_equal(crypto_index(c, &kr.keys[0], AUDIT_F_ACTOR, "alice", b), 0);
	assert_memory_equal(a, b, AUDIT_IX);
	assert_int_equal(crypto_index(c, &kr.keys[1], AUDIT_F_ACTOR, "alice", b), 0);
	assert_memory_not_equal(a, b, AUDIT_IX);
	assert_int_equal(crypto_index(c, &kr.keys[0], AUDIT_F_ACTION, "alice", b), 0);
	assert_memory_not_equal(a, b, AUDIT_IX);
	crypto_put(p, c);
	crypto_pool_free(p);
	keyring_wipe(&kr);
}

static void test_chain_secrets(void **state)
{
	char dir[] = "/tmp/audit_crypto_test.XXXXXX", path[64];
	struct chain_secrets s0, s1, back;
	unsigned char pub[AUDIT_PUB], sig[AUDIT_SIG];
	struct stat st;
	(void)state;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/audit.chain", dir);
	assert_int_equal(chain_genesis_secrets(&s0), 0);
	assert_int_equal(chain_evolve(&s0, &s1), 0);
	assert_int_equal(s1.epoch, 1);
	assert_memory_not_equal(s0.mac_key, s1.mac_key, AUDIT_KEY);
	assert_memory_not_equal(s0.sign_seed, s1.sign_seed, AUDIT_KEY);
	assert_int_equal(chain_file_write(path, &s0), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(chain_file_write(path, &s1), 0);
	assert_int_equal(chain_file_read(path, &back), 0);
	assert_int_equal(back.epoch, 1);
	assert_memory_equal(back.mac_key, s1.mac_key, AUDIT_KEY);
	/* Signatures: the epoch's seed signs, its public key verifies. */
	assert_int_equal(chain_public_key(s1.sign_seed, pub), 0);
	assert_int_equal(chain_sign(s1.sign_seed, "head", 4, sig), 0);
	assert_true(chain_sig_ok(pub, "head", 4, sig, AUDIT_SIG));
	assert_false(chain_sig_ok(pub, "hexd", 4, sig, AUDIT_SIG));
	assert_int_equal(chain_public_key(s0.sign_seed, pub), 0);
	assert_false(chain_sig_ok(pub, "head", 4, sig, AUDIT_SIG));
	unlink(path);
	rmdir(dir);
}

static int nonce_cmp(const void *a, const void *b)
{
	return memcmp(a, b, AUDIT_NONCE);
}

static void test_nonces_unique_across_restart(void **state)
{
	enum { N = 1000000, PER_TAKE = AUDIT_NFIELDS * 16 };
	char dir[] = "/tmp/audit_crypto_test.XXXXXX", path[64], cmd[96], err[128];
	unsigned char(*seen)[AUDIT_NONCE] = malloc((size_t)N * AUDIT_NONCE);
	unsigned char ct[AUDIT_SEALED(32)];
	struct audit_keyring kr;
	struct crypto_pool *cp;
	struct crypto *c;
	struct pool *pool;
	struct nonce_alloc *na;
	size_t n = 0;
	(void)state;

	assert_non_null(seen);
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/audit.db", dir);
	assert_int_equal(keyring_parse(K1, &kr, err, sizeof(err)), 0);
	assert_int_equal(crypto_pool_new(&cp), 0);
	assert_non_null(c = crypto_get(cp));
	for (int life = 0; life < 2; life++) {
		/* Each life is a process: a fresh allocator over the same audit.db,
		 * with the unused rest of its last block simply abandoned. */
		assert_int_equal(pool_open(path, &store_schema, NULL, &pool), 0);
		assert_int_equal(nonce_new(pool, 50000, &na), 0);
		while (n < (size_t)(life == 0 ? N / 2 + 123 : N)) {
			unsigned char base[AUDIT_NONCE];
			assert_int_equal(nonce_take(na, "k1", PER_TAKE, base), 0);
			for (int i = 0; i < PER_TAKE && n < (size_t)N; i++) {
				unsigned char nonce[AUDIT_NONCE];
				nonce_at(base, (uint64_t)i, nonce);
				assert_int_equal(
				    crypto_seal(c, &kr.keys[0], nonce, n, AUDIT_F_DETAIL,
				                "the same plaintext every time", 29, ct),
				    0);
				memcpy(seen[n++], ct, AUDIT_NONCE); /* the nonce as stored */
			}
		}
		nonce_free(na);
		pool_close(pool);
	}
	qsort(seen, N, AUDIT_NONCE, nonce_cmp);
	for (size_t i = 1; i < (size_t)N; i++)
		if (memcmp(seen[i - 1], seen[i], AUDIT_NONCE) == 0)
			fail_msg("nonce repeated at %zu", i);
	crypto_put(cp, c);
	crypto_pool_free(cp);
	keyring_wipe(&kr);
	free(seen);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_keyring_parse),
	    cmocka_unit_test(test_keyring_generate_file),
	    cmocka_unit_test(test_field_round_trip_and_binding),
	    cmocka_unit_test(test_chain_secrets),
	    cmocka_unit_test(test_nonces_unique_across_restart),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
