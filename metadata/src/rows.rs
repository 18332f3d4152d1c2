//! Decoding the stored rows into the model, once for every SQL backend: a backend only says how
//! to read a text, integer or byte column of its rows ([`Columns`]).

use pairdb_core::{Consistency, Placement};
use sqlx::Row;

use crate::sqlite::{epoch_from_sql, map_err};
use crate::{ApiKeyRecord, MetadataError, NodeRecord, NodeState, RateLimit, TenantConfig};

/// The column reads the decoders need.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String, MetadataError>;
    fn int(&self, column: &str) -> Result<i64, MetadataError>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, MetadataError>;

    fn u32(&self, column: &str) -> Result<u32, MetadataError> {
        let v = self.int(column)?;
        u32::try_from(v).map_err(|_| MetadataError::Corrupt(format!("{column} = {v} is not a u32")))
    }
}

macro_rules! columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> Result<String, MetadataError> {
                self.try_get(column).map_err(map_err)
            }
            fn int(&self, column: &str) -> Result<i64, MetadataError> {
                self.try_get(column).map_err(map_err)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>, MetadataError> {
                self.try_get(column).map_err(map_err)
            }
        }
    };
}

columns!(sqlx::sqlite::SqliteRow);
columns!(sqlx::postgres::PgRow);

pub(crate) fn tenant_from_row(row: &impl Columns) -> Result<TenantConfig, MetadataError> {
    let consistency = row.text("default_consistency")?;
    Ok(TenantConfig {
        tenant_id: row.text("tenant_id")?,
        replication_factor: row.u32("replication_factor")?,
        default_consistency: consistency
            .parse::<Consistency>()
            .map_err(|e| MetadataError::Corrupt(e.to_string()))?,
        rate_limit: RateLimit {
            requests_per_second: row.u32("rate_rps")?,
            burst: row.u32("rate_burst")?,
        },
        created_at: row.text("created_at")?,
    })
}

pub(crate) fn api_key_from_row(row: &impl Columns) -> Result<ApiKeyRecord, MetadataError> {
    Ok(ApiKeyRecord {
        key_id: row.text("key_id")?,
        tenant_id: row.text("tenant_id")?,
        secret_hash: row.bytes("secret_hash")?,
        created_at: row.text("created_at")?,
    })
}

pub(crate) fn node_from_row(row: &impl Columns) -> Result<NodeRecord, MetadataError> {
    let state = row.text("state")?;
    Ok(NodeRecord {
        node_id: row.text("node_id")?,
        address: row.text("address")?,
        state: NodeState::parse(&state)
            .ok_or_else(|| MetadataError::Corrupt(format!("unknown node state {state:?}")))?,
        created_at: row.text("created_at")?,
    })
}

/// Decodes the placement row, checking the JSON body agrees with the epoch column.
pub(crate) fn placement_from_row(row: &impl Columns) -> Result<Placement, MetadataError> {
    let epoch = epoch_from_sql(row.int("epoch")?)?;
    let body = row.text("body")?;
    let placement: Placement = serde_json::from_str(&body)
        .map_err(|e| MetadataError::Corrupt(format!("placement body: {e}")))?;
    if placement.epoch != epoch {
        return Err(MetadataError::Corrupt(format!(
            "placement body has epoch {} but its row says {epoch}",
            placement.epoch
        )));
    }
    Ok(placement)
}
