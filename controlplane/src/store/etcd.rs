//! The etcd store: conditional writes are etcd transactions comparing `mod_revision`.

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::{Store, StoreError, Versioned};

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None)
            .await
            .map_err(unavailable)?;
        Ok(Self { client })
    }

    /// The underlying client, for watches.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn current(resp: &etcd_client::TxnResponse) -> i64 {
        resp.op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map_or(0, |kv| kv.mod_revision())),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Runs `op` if `key` is at version `expected`; otherwise reads the current version.
    async fn conditional(&self, key: &str, expected: i64, op: TxnOp) -> Result<i64, StoreError> {
        let txn = Txn::new()
            .when([Self::guard(key, expected)])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client.clone().txn(txn).await.map_err(unavailable)?;
        if resp.succeeded() {
            Ok(resp.header().map_or(0, |h| h.revision()))
        } else {
            Err(StoreError::Conflict {
                expected,
                current: Self::current(&resp),
            })
        }
    }

    fn guard(key: &str, expected: i64) -> Compare {
        if expected == 0 {
            // An absent key has version 0.
            Compare::version(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, expected)
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.kvs().first().map(|kv| Versioned {
            value: kv.value().to_vec(),
            version: kv.mod_revision(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StoreError> {
        let resp = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let items = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    Versioned {
                        value: kv.value().to_vec(),
                        version: kv.mod_revision(),
                    },
                )
            })
            .collect();
        Ok((items, rev))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StoreError> {
        self.conditional(key, expected, TxnOp::put(key, value, None))
            .await
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<i64, StoreError> {
        self.conditional(key, expected, TxnOp::delete(key, None))
            .await
    }
}
