"""Every limit in one place. Units and qualifiers go last in names."""

ID_BYTES_MAX = 256
PAYLOAD_BYTES_MAX = 64 * 1024
BATCH_POINTS_MAX = 10_000  # upserts + deletes in one write
DIM_MAX = 4096
# |a|^2 of every stored or query vector; at most a quarter of float32's maximum, so that no l2
# distance |a - b|^2 <= (|a| + |b|)^2 or inner product can overflow to inf
VECTOR_SQUARED_NORM_MAX = float(3.4028234663852886e38 / 4)
K_MAX = 1024
EF_MAX = 8192
QUERIES_PER_REQUEST_MAX = 1024
# One search's budget, checked before any work (issue 12: 1,024 queries x k 1,024 x ef 8,192 with
# 1 KB payloads took every node 4-6 GiB and ~20 CPU-s, built a 1 GB reply, and expired leases):
SEARCH_HITS_MAX = 16_384  # queries x k (Milvus limits nq x topk to 16,384 too)
SEARCH_WORK_MAX = 262_144  # queries x max(ef, k): graph candidates kept per request, per shard
SEARCH_REPLY_BYTES_MAX = 32 * 1024 * 1024  # payload bytes in one search reply (node or router)
PAYLOAD_FETCH_IDS = 1024  # payloads read from RocksDB at a time while a reply is budgeted
GET_IDS_MAX = 10_000
SHARD_NUMBER_MAX = 1023
NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"  # collection names and ids
HNSW_M_MIN, HNSW_M_MAX = 2, 128
EF_CONSTRUCTION_MAX = 4096

FILTER_BYTES_MAX = 64 * 1024
FILTER_DEPTH_MAX = 8
FILTER_CONDITIONS_MAX = 256
MATCH_ANY_VALUES_MAX = 1024
INDEXED_KEYS_MAX = 64  # payload keys a shard indexes; filters on others are refused
INDEXED_STRING_BYTES_MAX = 64  # longer strings are indexed by hash and re-checked exactly

MESSAGE_BYTES_MAX = 64 * 1024 * 1024  # gRPC send/receive
WRITE_QUEUE_DEPTH_MAX = 64  # pending write batches per shard before RESOURCE_EXHAUSTED
GROUP_COMMIT_BATCHES_MAX = 32  # batches made durable by one fsync ...
GROUP_COMMIT_BYTES_MAX = 16 * 1024 * 1024  # ... and at most this many bytes (one bigger batch goes alone)
EXACT_SEARCH_CANDIDATES_MAX = 20_000  # filtered search brute-forces at most this many
EXACT_CHUNK_ROWS = 20_000  # brute force scores this many vectors at a time (memory bound)
GRAPH_FILTER_SELECTIVITY_MIN = 0.15  # a filter admitting this share of a shard walks the graph
EXACT_SEARCH_ALWAYS_CANDIDATES_MAX = 1_000  # ... unless it admits this few points: brute force
LOG_RETENTION_ENTRIES = 10_000  # log entries kept behind the newest checkpoint

DEFAULT_HNSW_M = 16
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF = 64
INITIAL_CAPACITY = 1024

# Admission control (issue 12: 41 accepted creates of 64 shards x RF 3 got a node OOM-killed).
# Until tenants exist (issue 13) the whole cluster is one tenant.
COLLECTIONS_PER_TENANT_MAX = 1000
REPLICAS_PER_NODE_MAX = 1024  # shard replicas on one node (each holds RocksDB files: ~6 fds)
FDS_PER_REPLICA = 8  # file descriptors a replica may hold open (RocksDB files, index, log)
# a node with less free disk under its data dir reports itself unhealthy (node/health.py): the
# coordinator moves its primaries and replicas away before RocksDB runs out of space mid-write
NODE_DISK_FREE_BYTES_MIN = 64 * 2**20
NODE_MEMORY_FRACTION = 0.8  # a node's default memory budget: this share of what it may use ...
# ... divided by the nodes that share the machine (`quartz up` passes --memory-max to each)
REPLICA_BASE_BYTES = 4 * 1024 * 1024  # an empty replica besides its index (measured ~2.8 MiB)

SHARDS_PER_COLLECTION_MAX = 64  # placement writes them in one etcd transaction (etcd allows 128 ops)
ETCD_TXN_OPS_MAX = 100  # below etcd's default --max-txn-ops of 128
REPLICATION_FACTOR_MAX = 5
BACKUP_COLLECTIONS_MAX = 1000  # collections named in one backup, restore or schedule
# replication_factor 0 (unset) means this many replicas, or every live node if fewer: with the
# default write_consistency (majority, 2 of 3) writes survive any single node lost for good
DEFAULT_REPLICATION_FACTOR = 3
FANOUT_INFLIGHT_MAX = 256  # node calls a router has in flight at once (all requests)
ROUTER_CALL_TIMEOUT_S = 30.0  # default deadline when the client sets none
CREATE_WAIT_S_MAX = 120.0

REPLICATION_TIMEOUT_S = 2.0  # a follower that does not ack within this is dropped from in_sync
REPLICATION_ENTRIES_PER_CALL_MAX = 64  # catch-up sends the log in calls of at most this many entries
INLINE_CATCHUP_ENTRIES_MAX = 256  # an in-sync follower this far behind is caught up inline
SNAPSHOT_TIMEOUT_S = 600.0
SESSION_WAIT_S_MAX = 1.0  # a replica waits this long to apply a session's LSN, then the router tries another
CHECKPOINT_RETRY_S_MIN = 1.0  # a failed checkpoint is retried after this, doubling ...
CHECKPOINT_RETRY_S_MAX = 60.0  # ... up to this, while writes go on from the log
WRITER_JOBS_QUEUED_MAX = 64  # replication/snapshot/exclusive jobs waiting for a shard's writer
# A follower must apply a replicated call within the deadline; the work grows with the bytes it
# carries (10k x 384-d points, 15 MB: 2.9 s on an idle 2-core machine, ~5 MB/s; 39.6 s with the
# machine's 2 cores shared by 5 busy processes, ~0.4 MB/s): the deadline is REPLICATION_TIMEOUT_S
# plus the bytes at this rate, scaled by ef_construction / 200.
REPLICATION_APPLY_BYTES_PER_S_MIN = 200_000
REPLICATION_CALL_BYTES_MAX = 16 * 1024 * 1024  # catch-up sends the log in calls of at most this

# Paging and export (issue 15; DESIGN §13)
SCROLL_LIMIT_DEFAULT = 100  # points per scroll page when the request says 0
SCROLL_LIMIT_MAX = 1000  # points per scroll page (and per batch of a delete by filter)
SCROLL_REPLY_BYTES_MAX = 16 * 1024 * 1024  # a page's ids, vectors and payloads (node and router); a
# page that would exceed it ends early (at least one point), its next_offset the first point left out
SCROLL_SORTED_CANDIDATES_MAX = 50_000  # a filter admitting at most this many points on a shard: its
# matches are sorted by id from the payload index; more: the rows are read in id order and tested
SCROLL_SCAN_ROWS_MAX = 100_000  # rows one scroll call reads in id order; then the page ends early
# (possibly empty) and its next_offset is the next row to read
