//! outpost-discovery: how Outpost nodes and agents find the nodes of their cluster.
//!
//! A serving node registers `_outpost._tcp.local.` through mdns-sd ([`Advertiser`]) with TXT
//! records naming its cluster, node id, API and peer ports and version. A [`Discovery`] handle
//! browses that service and merges what it sees with a static peer list (`[discovery] peers`
//! or `--peer`) into one de-duplicated [`PeerView`] of one cluster, with change events; the
//! one-shot [`discover`] backs `outpost discover`. An interface allow-list keeps mDNS on the
//! site networks an operator names ([`DiscoveryConfig`]).
//!
//! Discovery is a hint only. Nothing here authenticates anything: an advert can be forged by
//! anyone on the LAN, so whoever dials a peer from the view must still check it with the
//! cluster's mTLS (pinned CA, node id in the certificate). This crate deliberately knows
//! nothing of certificates, Raft, membership or the node's storage; it does not decide which
//! peer to dial, and it never re-addresses anyone: it only reports what it saw.
//!
//! Layout: [`config`] (the `[discovery]` section, static peer specs), [`txt`] (advert <-> TXT
//! records), [`view`] (the pure merge of sightings and static entries) are pure and
//! table-tested; the mdns-sd daemons and threads stay in the thin `mdns` module.

pub mod config;
mod mdns;
pub mod txt;
pub mod view;

pub use config::{DiscoveryConfig, PeerSpec, PeerSpecError};
pub use mdns::{ADDRESS_CHECK_INTERVAL_SECS, Advertiser, Discovery, STATIC_REFRESH, discover};
pub use txt::{Advert, SERVICE_TYPE, Sighting, TxtError};
pub use view::{Peer, PeerView, ResolvedStatic, merge_view};

/// Errors of this crate. Causes are kept as sources.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mDNS daemon refused a command or could not start.
    #[error("mDNS daemon")]
    Mdns(#[from] mdns_sd::Error),
    /// A static peer entry is malformed.
    #[error("static peer {spec:?}")]
    BadPeer {
        spec: String,
        #[source]
        source: PeerSpecError,
    },
    /// The advert has a field that cannot be published.
    #[error("advert")]
    Advert(#[from] TxtError),
    /// The pump thread could not be started.
    #[error("starting the discovery thread")]
    Thread(#[source] std::io::Error),
    /// The mDNS daemon did not confirm an operation in time.
    #[error("mDNS daemon did not confirm {0} in time")]
    Timeout(&'static str),
}
