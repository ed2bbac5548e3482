/*
 * fetch.c — the online client of the Pwned Passwords range API: one thread
 * driving a libcurl multi handle, so a slow API holds no RPC worker, every
 * request reuses the multi's keep-alive connections, and at most
 * `max_in_flight` requests are out at once (the rest wait in a queue).
 * 429 and 5xx are retried with exponential back-off, honouring Retry-After,
 * but never past the job's deadline: a job that cannot finish in time fails
 * at once instead of answering late.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "services/breach/breach.h"

#define FETCH_POLL_MAX_MS 1000

struct fetch_job {
	struct fetch_job *next;
	struct fetch *f;
	uint32_t prefix;
	uint64_t deadline_ms; /* mono: the answer must be given before */
	uint64_t retry_at_ms; /* mono: not started again before */
	int attempts;
	CURL *easy;
	char *body;
	size_t len, cap;
	fetch_done_fn done;
	void *arg;
};

struct fetch {
	struct fetch_opts o;
	char base[512];
	pthread_t thread;
	pthread_mutex_t mu;
	struct fetch_job *submitted; /* from any thread, under mu */
	bool stopping;               /* under mu */
	struct fetch_job *waiting;   /* fetcher thread only */
	struct fetch_job *running;   /* fetcher thread only: in the multi handle */
	int active;                  /* fetcher thread only */
	CURLM *multi;
	struct curl_slist *headers;
	struct fetch_stats st; /* _Atomic members */
};

static size_t fetch_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct fetch_job *j = arg;
	size_t n = size * nmemb;
	char *b;

	if (n > j->f->o.max_body - j->len)
		return 0; /* over the cap: curl aborts the transfer (a failure) */
	if (j->len + n > j->cap) {
		size_t cap = j->cap ? j->cap * 2 : 64 * 1024;
		while (cap < j->len + n)
			cap *= 2;
		if ((b = realloc(j->body, cap)) == NULL)
			return 0;
		j->body = b;
		j->cap = cap;
	}
	memcpy(j->body + j->len, data, n);
	j->len += n;
	return n;
}

static void fetch_finish(struct fetch_job *j, int rv, struct pairs *p)
{
	if (j->easy != NULL)
		curl_easy_cleanup(j->easy);
	free(j->body);
	j->done(j->arg, rv, p);
	pairs_unref(p);
	free(j);
}

static int fetch_begin(struct fetch *f, struct fetch_job *j, uint64_t now)
{
	char url[600];
	long timeout = (long)(j->deadline_ms - now);

	if (timeout > f->o.total_timeout_ms)
		timeout = f->o.total_timeout_ms;
	snprintf(url, sizeof(url), "%s/range/%05X", f->base, j->prefix);
	if (j->easy == NULL && (j->easy = curl_easy_init()) == NULL)
		return ERR_NOMEM;
	curl_easy_reset(j->easy);
	j->len = 0;
	curl_easy_setopt(j->easy, CURLOPT_URL, url);
	curl_easy_setopt(j->easy, CURLOPT_HTTPHEADER, f->headers);
	curl_easy_setopt(j->easy, CURLOPT_USERAGENT, "Magnetar/" SVC_VERSION " (magnetar-breach)");
	curl_easy_setopt(j->easy, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(j->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(j->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(j->easy, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(j->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(j->easy, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)f->o.connect_timeout_ms < timeout ? (long)f->o.connect_timeout_ms
	                                                         : timeout);
	curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, timeout);
	curl_easy_setopt(j->easy, CURLOPT_WRITEFUNCTION, fetch_write);
	curl_easy_setopt(j->easy, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(j->easy, CURLOPT_PRIVATE, j);
	if (curl_multi_add_handle(f->multi, j->easy) != CURLM_OK)
		return ERR_INTERNAL;
	j->attempts++;
	j->next = f->running;
	f->running = j;
	f->active++;
	f->st.requests++;
	return 0;
}

/* Retry after `wait_ms` if that still ends before the deadline. */
static void fetch_retry_or_fail(struct fetch *f, struct fetch_job *j, uint64_t now,
                                uint64_t wait_ms)
{
	/* the retry needs time to run too: a few ms at least */
	if (j->attempts >= f->o.max_attempts || now + wait_ms + 5 >= j->deadline_ms) {
		fetch_finish(j, ERR_UNAVAIL, NULL);
		return;
	}
	f->st.retries++;
	j->retry_at_ms = now + wait_ms;
	j->next = f->waiting;
	f->waiting = j;
}

static void fetch_completed(struct fetch *f, CURLMsg *m)
{
	struct fetch_job *j;
	uint64_t now = clock_mono_ms();
	uint64_t backoff;
	curl_off_t retry_after = 0;
	long code = 0;
	struct pairs *p;
	int rv;

	curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
	curl_multi_remove_handle(f->multi, m->easy_handle);
	for (struct fetch_job **pp = &f->running; *pp != NULL; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	f->active--;
	backoff = (uint64_t)f->o.backoff_ms << (j->attempts - 1);
	if (m->data.result != CURLE_OK) {
		/* transport failure, timeout, or body over the cap / cut short */
		f->st.transport_errors++;
		if (m->data.result == CURLE_WRITE_ERROR || m->data.result == CURLE_PARTIAL_FILE) {
			f->st.malformed++;
			fetch_finish(j, ERR_PROTO, NULL);
			return;
		}
		fetch_retry_or_fail(f, j, now, backoff);
		return;
	}
	curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code == 429 || code >= 500) {
		if (code == 429)
			f->st.throttled++;
		else
			f->st.server_errors++;
		/* curl parses both delta-seconds and HTTP-date forms */
		curl_easy_getinfo(j->easy, CURLINFO_RETRY_AFTER, &retry_after);
		if (retry_after > 0)
			backoff = (uint64_t)retry_after * 1000u;
		fetch_retry_or_fail(f, j, now, backoff);
		return;
	}
	if (code != 200) {
		f->st.server_errors++;
		fetch_finish(j, ERR_PROTO, NULL);
		return;
	}
	if ((rv = hibp_parse(j->body != NULL ? j->body : "", j->len, &p, NULL)) != 0) {
		f->st.malformed++;
		fetch_finish(j, rv == ERR_NOMEM ? ERR_NOMEM : ERR_PROTO, NULL);
		return;
	}
	f->st.ok++;
	fetch_finish(j, 0, p);
}

/* Starts what may start, fails what is out of time; returns the poll wait. */
static int fetch_schedule(struct fetch *f)
{
	struct fetch_job **pp = &f->waiting, *j;
	uint64_t now = clock_mono_ms(), wake = now + FETCH_POLL_MAX_MS;

	while ((j = *pp) != NULL) {
		if (now + 1 >= j->deadline_ms) {
			*pp = j->next;
			f->st.deadline++;
			fetch_finish(j, ERR_TIMEOUT, NULL);
			continue;
		}
		if (j->retry_at_ms <= now && f->active < f->o.max_in_flight) {
			*pp = j->next;
			if (fetch_begin(f, j, now) != 0)
				fetch_finish(j, ERR_INTERNAL, NULL);
			continue;
		}
		if (j->retry_at_ms > now && j->retry_at_ms < wake)
			wake = j->retry_at_ms;
		if (j->deadline_ms < wake)
			wake = j->deadline_ms;
		pp = &j->next;
	}
	return (int)(wake - now);
}

static void *fetch_thread(void *arg)
{
	struct fetch *f = arg;
	struct fetch_job *in, **tail;
	bool stopping = false;
	CURLMsg *m;
	int running, left, wait_ms;
	long curl_wait;

	while (!stopping) {
		pthread_mutex_lock(&f->mu);
		in = f->submitted;
		f->submitted = NULL;
		stopping = f->stopping;
		pthread_mutex_unlock(&f->mu);
		/* submitted jobs go behind the waiting ones */
		for (tail = &f->waiting; *tail != NULL; tail = &(*tail)->next)
			;
		*tail = in;
		wait_ms = fetch_schedule(f);
		curl_multi_perform(f->multi, &running);
		while ((m = curl_multi_info_read(f->multi, &left)) != NULL)
			if (m->msg == CURLMSG_DONE)
				fetch_completed(f, m);
		wait_ms = fetch_schedule(f);
		if (curl_multi_timeout(f->multi, &curl_wait) == CURLM_OK && curl_wait >= 0 &&
		    curl_wait < wait_ms)
			wait_ms = (int)curl_wait;
		if (!stopping)
			curl_multi_poll(f->multi, NULL, 0, wait_ms, NULL);
	}
	return NULL;
}

int fetch_start(const struct fetch_opts *o, struct fetch **out)
{
	struct fetch *f;
	size_t n;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return ERR_INTERNAL;
	if ((f = calloc(1, sizeof(*f))) == NULL)
		return ERR_NOMEM;
	f->o = *o;
	if (f->o.max_in_flight <= 0)
		f->o.max_in_flight = 4;
	if (f->o.connect_timeout_ms <= 0)
		f->o.connect_timeout_ms = 2000;
	if (f->o.total_timeout_ms <= 0)
		f->o.total_timeout_ms = 5000;
	if (f->o.max_attempts <= 0)
		f->o.max_attempts = 3;
	if (f->o.backoff_ms <= 0)
		f->o.backoff_ms = 100;
	if (f->o.max_body == 0)
		f->o.max_body = 1u << 20;
	n = strlen(o->base_url);
	while (n > 0 && o->base_url[n - 1] == '/')
		n--;
	if (n == 0 || n >= sizeof(f->base)) {
		free(f);
		return ERR_INVAL;
	}
	memcpy(f->base, o->base_url, n);
	pthread_mutex_init(&f->mu, NULL);
	f->multi = curl_multi_init();
	f->headers = curl_slist_append(NULL, "Add-Padding: true");
	if (f->multi == NULL || f->headers == NULL)
		goto fail;
	curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)f->o.max_in_flight);
	curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->o.max_in_flight);
	if (pthread_create(&f->thread, NULL, fetch_thread, f) != 0)
		goto fail;
	*out = f;
	return 0;
fail:
	curl_slist_free_all(f->headers);
	if (f->multi != NULL)
		curl_multi_cleanup(f->multi);
	pthread_mutex_destroy(&f->mu);
	free(f);
	return ERR_NOMEM;
}

int fetch_submit(struct fetch *f, uint32_t prefix, uint64_t deadline_mono_ms, fetch_done_fn done,
                 void *arg)
{
	struct fetch_job *j;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		return ERR_NOMEM;
	j->f = f;
	j->prefix = prefix & 0xfffff;
	j->deadline_ms = deadline_mono_ms;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&f->mu);
	if (f->stopping) {
		pthread_mutex_unlock(&f->mu);
		free(j);
		return ERR_CLOSED;
	}
	j->next = f->submitted;
	f->submitted = j;
	pthread_mutex_unlock(&f->mu);
	curl_multi_wakeup(f->multi);
	return 0;
}

void fetch_stop(struct fetch *f)
{
	struct fetch_job *j;

	if (f == NULL)
		return;
	pthread_mutex_lock(&f->mu);
	f->stopping = true;
	pthread_mutex_unlock(&f->mu);
	curl_multi_wakeup(f->multi);
	pthread_join(f->thread, NULL);
	/* Whatever is left fails now: in flight, waiting, or just submitted. */
	while ((j = f->running) != NULL) {
		f->running = j->next;
		curl_multi_remove_handle(f->multi, j->easy);
		fetch_finish(j, ERR_CLOSED, NULL);
	}
	while ((j = f->waiting) != NULL) {
		f->waiting = j->next;
		fetch_finish(j, ERR_CLOSED, NULL);
	}
	while ((j = f->submitted) != NULL) {
		f->submitted = j->next;
		fetch_finish(j, ERR_CLOSED, NULL);
	}
	curl_multi_cleanup(f->multi);
	curl_slist_free_all(f->headers);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

void fetch_get_stats(struct fetch *f, struct fetch_stats *st)
{
	st->requests = f->st.requests;
	st->ok = f->st.ok;
	st->retries = f->st.retries;
	st->throttled = f->st.throttled;
	st->server_errors = f->st.server_errors;
	st->transport_errors = f->st.transport_errors;
	st->malformed = f->st.malformed;
	st->deadline = f->st.deadline;
}
