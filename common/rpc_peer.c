/*
 * rpc_peer.c — the process's peer policy (rpc.h): which uids a server admits
 * (rpc_server.c, events.c) and which uid a client accepts as the service it
 * dialled (rpc_client.c).
 */
#include "common/rpc.h"

#include <stdatomic.h>

#include "common/log.h"

static struct rpc_peer_policy peer_policy;
static _Atomic bool peer_policy_set;

void rpc_set_peer_policy(const struct rpc_peer_policy *p)
{
	peer_policy = *p;
	atomic_store(&peer_policy_set, true);
}

static unsigned rpc_peer_roles(uid_t uid)
{
	return peer_policy.roles(uid, peer_policy.arg);
}

bool rpc_peer_admits(uid_t uid, bool events)
{
	unsigned admit = events ? peer_policy.admit_events : peer_policy.admit;

	return !atomic_load(&peer_policy_set) || (rpc_peer_roles(uid) & admit) != 0;
}

bool rpc_peer_admitted(uid_t uid, bool events)
{
	if (!atomic_load(&peer_policy_set))
		return true;
	/* In development every role has our uid: this passes, but it ran. */
	log_debug("rpc: peer uid=%u roles=0x%x%s", (unsigned)uid, rpc_peer_roles(uid),
	          events ? " (events)" : "");
	if (rpc_peer_admits(uid, events))
		return true;
	log_warnx("rpc: refused a peer uid=%u: not on this socket's allow-list%s", (unsigned)uid,
	          events ? " (events)" : "");
	return false;
}

bool rpc_peer_is(uid_t uid, unsigned roles)
{
	if (!atomic_load(&peer_policy_set) || roles == 0)
		return true;
	return (rpc_peer_roles(uid) & roles) != 0;
}
