"""Tenant keys: API keys made at run time, each with its own limits, budget and spend.

One job per module::

    model.py     TenantKey (what a key is), the budget periods
    fields.py    the JSON of POST and PATCH /admin/keys, validated
    secrets.py   new secrets and their keyed hash (only the hash is stored)
    store.py     KeyStore (the protocol) and SqliteKeyStore (one node, WAL mode)
    slots.py     the node's shared-memory key slots: rate buckets, requests in flight,
                 budget spent and reserved, and the generation of the key set
    ring.py      KeyRing: a worker's keys in memory, reloaded when the generation moves
    gate.py      KeyGate: a request's admission by its key (models, rates, budget)
    spend.py     SpendLog: a worker's spend, flushed to the store every KEY_SPEND_FLUSH_MS

Several nodes (REDIS_URL): ``cluster/key_store.py`` (Redis is the store, ``keys.db`` each
node's copy) and ``cluster/key_sync.py`` (the node agent follows Redis's generation and
spend into this node's copy and slots).
"""
