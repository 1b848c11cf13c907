"""Several nodes as one gateway, through Redis or Valkey (docs/cluster.md).

Off unless ``REDIS_URL`` is set. Then:

* ``connect``: one client per URL scheme (a server, a cluster, Sentinel), with the
  short timeouts every call runs under;
* ``guard``: every Redis call goes through a ``RedisGuard`` (a timeout and a circuit
  breaker), so that no request waits on Redis past ``REDIS_TIMEOUT_MS`` and a Redis that
  is slow or gone is noticed once, not per call;
* ``keys``: the names of every key, with hash tags so that each script touches one slot
  of a Redis Cluster;
* ``state``: the node's view of the cluster (Redis up or down and why, live nodes) in a
  region of the node's shared memory, which every worker reads (``/health``, metrics,
  fallback limits);
* ``agent``: the node agent, a thread of the main process with its own event loop that
  runs the node's periodic work against Redis (heartbeat and membership first; each
  shared subsystem adds a ``Sync``);
* ``deadlines``: a provider's pause and open circuit, shared by every node;
* ``settings``: the live settings, shared by every node;
* ``figures``: each node's figures in its heartbeat, and ``/admin/stats``'s members;
* ``node_state``: what the agent opens of its node's shared memory.
"""
