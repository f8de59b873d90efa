# Same as config.capnp, plus the compatibility flag delete_all_deletes_alarm (default on from compat date 2026-02-24).
# workerd config for the DO storage oracle.
# The socket address and the data directory are overridden on the command line by run.mjs:
#   workerd serve config.capnp --socket-addr http=127.0.0.1:PORT --directory-path do-disk=/abs/data/dir
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "oracle", worker = .oracleWorker),
    (name = "do-disk", disk = (path = "data/do", writable = true)),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:8787", http = (), service = "oracle"),
  ],
);

const oracleWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker/worker.js"),
  ],
  compatibilityDate = "2026-01-01",
  compatibilityFlags = ["nodejs_compat", "delete_all_deletes_alarm"],
  bindings = [
    (name = "SQL", durableObjectNamespace = "SqlDO"),
    (name = "KV", durableObjectNamespace = "KvDO"),
  ],
  durableObjectNamespaces = [
    (className = "SqlDO", uniqueKey = "oracle-sql-do", enableSql = true),
    (className = "KvDO", uniqueKey = "oracle-kv-do", enableSql = false),
  ],
  durableObjectStorage = (localDisk = "do-disk"),
);
