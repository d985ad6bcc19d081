//! Configuration queries, and the effective configuration of a client.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::{ConfigEntry, Scope};
use crate::rules::effective_config;

impl Reader {
    pub fn config_get(
        &self,
        scope: &Scope,
        key: &str,
    ) -> Result<Option<ConfigEntry>, StorageError> {
        let (kind, sid) = scope.to_columns();
        self.with(|c| {
            c.query_row(
                &format!("{CONFIG_SELECT} WHERE scope_kind = ?1 AND scope_id = ?2 AND key = ?3"),
                [kind, sid, key],
                raw_config,
            )
            .optional()?
            .map(config_from_raw)
            .transpose()
        })
    }

    /// Every entry of one scope, or of all scopes when None; ordered by scope then key.
    pub fn config_list(&self, scope: Option<&Scope>) -> Result<Vec<ConfigEntry>, StorageError> {
        self.with(|c| match scope {
            None => query_config(c, "", &[]),
            Some(s) => {
                let (kind, sid) = s.to_columns();
                query_config(c, "WHERE scope_kind = ?1 AND scope_id = ?2", &[kind, sid])
            }
        })
    }

    /// global < each group (in the order given; later wins) < client.
    pub fn config_effective(
        &self,
        client_id: &str,
        groups: &[String],
    ) -> Result<BTreeMap<String, String>, StorageError> {
        let entries = self.with(|c| {
            let mut all = query_config(c, "WHERE scope_kind = 'global'", &[])?;
            all.extend(query_config(
                c,
                "WHERE scope_kind = 'client' AND scope_id = ?1",
                &[client_id],
            )?);
            for g in groups {
                all.extend(query_config(
                    c,
                    "WHERE scope_kind = 'group' AND scope_id = ?1",
                    &[g.as_str()],
                )?);
            }
            Ok(all)
        })?;
        Ok(effective_config(&entries, client_id, groups))
    }
}

const CONFIG_SELECT: &str =
    "SELECT scope_kind, scope_id, key, value, version, updated_at_ms, updated_by FROM config";

type RawConfig = (String, String, String, String, i64, i64, String);

fn raw_config(r: &Row<'_>) -> rusqlite::Result<RawConfig> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn config_from_raw(r: RawConfig) -> Result<ConfigEntry, StorageError> {
    let (kind, sid, key, value, version, updated_at_ms, updated_by) = r;
    let scope = Scope::from_columns(&kind, &sid).ok_or_else(|| {
        StorageError::Corrupt(format!("config key {key} has bad scope {kind:?}/{sid:?}"))
    })?;
    Ok(ConfigEntry {
        scope,
        key,
        value,
        version: version as u64,
        updated_at_ms,
        updated_by,
    })
}

fn query_config(
    c: &Connection,
    filter: &str,
    args: &[&str],
) -> Result<Vec<ConfigEntry>, StorageError> {
    let mut stmt = c.prepare(&format!(
        "{CONFIG_SELECT} {filter} ORDER BY scope_kind, scope_id, key"
    ))?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), raw_config)?;
    rows.map(|r| config_from_raw(r?)).collect()
}
