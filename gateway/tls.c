/*
 * tls.c — HTTPS on the main listener (MAGNETAR_TLS_CERT/MAGNETAR_TLS_KEY).
 *
 * libmicrohttpd does the TLS (Debian builds it on GnuTLS); this file only
 * reads the PEM files while the gateway may still read them (before
 * svc_lockdown), hands them to MHD as options, and wipes the key from our
 * memory once MHD has loaded it (MHD_start_daemon parses both at once).
 * TLS 1.2 and 1.3 only: older versions have no place in a new service.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/err.h"
#include "common/log.h"
#include "gateway/gateway.h"

#define TLS_PEM_MAX (1 << 20) /* a certificate chain is kilobytes */

/* GnuTLS priority string: its secure defaults, minus everything before 1.2,
 * minus every non-AEAD cipher (CBC with HMAC: Lucky13 and kin) and every key
 * exchange without forward secrecy (static RSA). What is left is ECDHE with
 * AES-GCM or ChaCha20-Poly1305 for 1.2, and 1.3's own suites. */
static const char tls_priorities[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:"
    "+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA";

/* Reads a whole PEM file into a NUL-terminated buffer. */
static int tls_read_pem(const char *path, char **out)
{
	struct stat st;
	size_t got = 0;
	char *buf;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		log_warnx("tls: cannot open %s: %s", path, strerror(errno));
		return ERR_IO;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    st.st_size > TLS_PEM_MAX) {
		log_warnx("tls: %s is not a regular file of 1 byte to 1 MiB", path);
		close(fd);
		return ERR_INVAL;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return ERR_NOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != (size_t)st.st_size) {
		log_warnx("tls: short read of %s", path);
		OPENSSL_clear_free(buf, (size_t)st.st_size + 1);
		return ERR_IO;
	}
	buf[got] = '\0';
	*out = buf;
	return 0;
}

int tls_load(struct gateway *gw)
{
	const struct gateway_vars *v = gw_vars(gw);
	int rv;

	if (v->tls_cert == NULL)
		return 0; /* config.c refuses one without the other */
	if ((rv = tls_read_pem(v->tls_cert, &gw->tls_cert)) != 0)
		return rv;
	if ((rv = tls_read_pem(v->tls_key, &gw->tls_key)) != 0) {
		tls_wipe(gw);
		return rv;
	}
	return 0;
}

size_t tls_mhd_options(const struct gateway *gw, struct MHD_OptionItem *opt, size_t n)
{
	size_t i = 0;

	if (gw->tls_cert == NULL || n < 3)
		return 0;
	opt[i++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, gw->tls_cert};
	opt[i++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, gw->tls_key};
	opt[i++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)tls_priorities};
	return i;
}

void tls_wipe(struct gateway *gw)
{
	if (gw->tls_key != NULL)
		OPENSSL_clear_free(gw->tls_key, strlen(gw->tls_key) + 1);
	free(gw->tls_cert);
	gw->tls_key = gw->tls_cert = NULL;
}
