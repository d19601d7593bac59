//! The TOML shapes the configuration accepts beyond plain serde: one-or-many address
//! lists, comma-separated URL lists and the guide's numbered `[ice.turn.N]` tables.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};

use super::TurnServerConfig;

/// The guide writes TURN servers as `[ice.turn.1]`, `[ice.turn.2]`; turn that numbered-table
/// form into the array form `[[ice.turn]]`, ordered by number.
pub(super) fn normalize_turn_tables(table: &mut toml::Table) {
    let Some(toml::Value::Table(ice)) = table.get_mut("ice") else {
        return;
    };
    let Some(toml::Value::Table(numbered)) = ice.get("turn") else {
        return;
    };
    let mut entries: Vec<(u64, String, toml::Value)> = numbered
        .iter()
        .map(|(k, v)| (k.parse::<u64>().unwrap_or(u64::MAX), k.clone(), v.clone()))
        .collect();
    entries.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let array = entries.into_iter().map(|(_, _, v)| v).collect();
    ice.insert("turn".into(), toml::Value::Array(array));
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

pub(super) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Ok(match OneOrMany::<String>::deserialize(d)? {
        OneOrMany::One(s) => parse_addrs(s.split(','))?,
        OneOrMany::Many(v) => parse_addrs(v.iter().map(String::as_str))?,
    })
}

pub(super) fn optional_one_or_many<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<SocketAddr>>, D::Error> {
    one_or_many(d).map(Some)
}

fn parse_addrs<'a, E: serde::de::Error>(
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<SocketAddr>, E> {
    items
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .map_err(|_| E::custom(format!("{s:?} is not an IP:port address")))
        })
        .collect()
}

pub(super) fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::<String>::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        OneOrMany::Many(v) => v.into_iter().map(|u| u.trim().to_string()).collect(),
    })
}

pub(super) fn turn_servers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<TurnServerConfig>, D::Error> {
    Vec::<TurnServerConfig>::deserialize(d)
}
