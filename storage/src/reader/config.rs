//! Configuration queries, and the effective configuration of a client.

use std::collections::BTreeMap;

use rusqlite::{Connection, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::{ConfigEntry, Scope};
use crate::rows::{FromRow, all, corrupt, one};
use crate::rules::effective_config;

impl Reader {
    pub fn config_get(
        &self,
        scope: &Scope,
        key: &str,
    ) -> Result<Option<ConfigEntry>, StorageError> {
        let (kind, sid) = scope.to_columns();
        self.with(|c| {
            Ok(one(
                c,
                "WHERE scope_kind = ?1 AND scope_id = ?2 AND key = ?3",
                [kind, sid, key],
            )?)
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

    /// Every scope that holds keys, with how many: global first, then groups, then clients.
    pub fn config_scopes(&self) -> Result<Vec<(Scope, u64)>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT scope_kind, scope_id, COUNT(*) FROM config GROUP BY scope_kind, scope_id
                 ORDER BY CASE scope_kind WHEN 'global' THEN 0 WHEN 'group' THEN 1 ELSE 2 END,
                          scope_id",
            )?;
            let rows = stmt.query_map([], |r| {
                let (kind, id): (String, String) = (r.get(0)?, r.get(1)?);
                let scope = Scope::from_columns(&kind, &id)
                    .ok_or_else(|| corrupt(0, format!("config has bad scope {kind:?}/{id:?}")))?;
                Ok((scope, u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0)))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
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

impl FromRow for ConfigEntry {
    const SELECT: &'static str =
        "SELECT scope_kind, scope_id, key, value, version, updated_at_ms, updated_by FROM config";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<ConfigEntry> {
        let kind: String = r.get(0)?;
        let sid: String = r.get(1)?;
        let key: String = r.get(2)?;
        let Some(scope) = Scope::from_columns(&kind, &sid) else {
            return Err(corrupt(
                0,
                format!("config key {key} has bad scope {kind:?}/{sid:?}"),
            ));
        };
        Ok(ConfigEntry {
            scope,
            key,
            value: r.get(3)?,
            version: r.get::<_, i64>(4)? as u64,
            updated_at_ms: r.get(5)?,
            updated_by: r.get(6)?,
        })
    }
}

/// The entries matching `filter`, ordered by scope then key.
fn query_config(
    c: &Connection,
    filter: &str,
    args: &[&str],
) -> Result<Vec<ConfigEntry>, StorageError> {
    Ok(all(
        c,
        &format!("{filter} ORDER BY scope_kind, scope_id, key"),
        rusqlite::params_from_iter(args),
    )?)
}
