//! Reading rows into records: one `FromRow` impl per record type, beside the queries of its
//! domain, instead of a raw tuple per record and a conversion after it.
//!
//! A value SQLite returns but the record cannot hold (an unknown enum text, JSON that does not
//! parse) makes the row corrupt: `corrupt` and `json` report it as a conversion failure that
//! carries a `CorruptRow`, which becomes `StorageError::Corrupt` with that message.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Params, Row};
use serde::de::DeserializeOwned;

use crate::error::CorruptRow;

/// A record read from one row of `SELECT`.
pub(crate) trait FromRow: Sized {
    /// `SELECT <columns> FROM <table>` with the columns in the order `from_row` reads them;
    /// callers append `WHERE …` / `ORDER BY …`.
    const SELECT: &'static str;

    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self>;
}

/// Every record of `SELECT … {tail}`.
pub(crate) fn all<T: FromRow>(
    c: &Connection,
    tail: &str,
    params: impl Params,
) -> rusqlite::Result<Vec<T>> {
    c.prepare_cached(&format!("{} {tail}", T::SELECT))?
        .query_map(params, T::from_row)?
        .collect()
}

/// The record of `SELECT … {tail}`, if there is one.
pub(crate) fn one<T: FromRow>(
    c: &Connection,
    tail: &str,
    params: impl Params,
) -> rusqlite::Result<Option<T>> {
    c.prepare_cached(&format!("{} {tail}", T::SELECT))?
        .query_row(params, T::from_row)
        .optional()
}

/// Column `col` held a value the record cannot hold; `message` names the row and the value.
pub(crate) fn corrupt(col: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, Type::Text, Box::new(CorruptRow(message)))
}

/// Column `col`, a JSON text, decoded; `message` names the row when it does not parse.
pub(crate) fn json<T: DeserializeOwned>(
    r: &Row<'_>,
    col: usize,
    message: impl FnOnce(serde_json::Error) -> String,
) -> rusqlite::Result<T> {
    let text: String = r.get(col)?;
    serde_json::from_str(&text).map_err(|e| corrupt(col, message(e)))
}

/// An integer column that is checked non-negative on the way in.
pub(crate) fn u64_col(r: &Row<'_>, col: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(r.get::<_, i64>(col)?).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StorageError;
    use crate::model::{ClientRecord, TokenRecord};

    fn read<T: FromRow>(conn: &Connection, tail: &str) -> Result<Option<T>, StorageError> {
        Ok(one(conn, tail, [])?)
    }

    /// A row that does not fit its record is `Corrupt` naming the row, as the raw-tuple
    /// conversions said before; any other SQLite error stays `Sqlite`.
    #[test]
    fn undecodable_rows_are_corrupt() -> Result<(), StorageError> {
        let mut conn = Connection::open_in_memory()?;
        crate::schema::migrate(&mut conn)?;
        conn.execute_batch(
            "INSERT INTO clients (id, hostname, groups_json, cert_serial, enrolled_at_ms)
                 VALUES ('c1', 'h', 'not json', 's', 1), ('c2', 'h', '[\"lab\"]', 's', 1);
             INSERT INTO tokens (id, kind, secret_sha256, expires_at_ms, uses_left, groups_json,
                                 created_at_ms, created_by)
                 VALUES ('t1', 'node', 'x', 1, NULL, '{', 1, 'a'),
                        ('t2', 'node', 'x', 1, 5000000000, '[]', 1, 'a');",
        )?;
        let cases: [(&str, Result<Option<()>, StorageError>); 4] = [
            (
                "clients.groups_json of c1: ",
                read::<ClientRecord>(&conn, "WHERE id = 'c1'").map(|o| o.map(drop)),
            ),
            (
                "token t1 has bad groups",
                read::<TokenRecord>(&conn, "WHERE id = 't1'").map(|o| o.map(drop)),
            ),
            (
                "token t2 has bad uses_left",
                read::<TokenRecord>(&conn, "WHERE id = 't2'").map(|o| o.map(drop)),
            ),
            (
                "sqlite: ",
                read::<ClientRecord>(&conn, "WHERE no_such_column = 1").map(|o| o.map(drop)),
            ),
        ];
        for (want, got) in cases {
            match got {
                Err(StorageError::Corrupt(m)) => assert!(m.starts_with(want), "{want}: {m}"),
                Err(e @ StorageError::Sqlite(_)) => {
                    assert!(e.to_string().starts_with(want), "{want}: {e}")
                }
                other => panic!("{want}: got {other:?}"),
            }
        }
        let c2 = read::<ClientRecord>(&conn, "WHERE id = 'c2'")?.map(|c| c.groups);
        assert_eq!(c2, Some(vec!["lab".to_owned()]));
        Ok(())
    }
}
