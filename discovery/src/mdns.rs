//! The thin I/O layer: the mdns-sd daemons, one pump thread, static-name resolution.
//!
//! Threads: each [`Advertiser`] and each [`Discovery`] with mDNS owns one mdns-sd daemon
//! thread (sockets, timers, probing, re-announcing). A [`Discovery`] also owns one pump thread
//! that turns daemon events and static-peer resolution into the merged view. All of them are
//! created by the calling thread and so live in its network namespace (tests rely on that).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, IfPredicate, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::watch;

use crate::DiscoveryError;
use crate::config::{DiscoveryConfig, PeerSpec, interface_allowed};
use crate::txt::{Advert, SERVICE_TYPE, Sighting, instance_of, parse_sighting};
use crate::view::{PeerView, ResolvedStatic, merge_view};

/// How often the daemon looks for address changes (and re-announces an advert on a change).
pub const ADDRESS_CHECK_INTERVAL_SECS: u32 = 1;

/// How often static peer names are resolved again.
pub const STATIC_REFRESH: Duration = Duration::from_secs(30);

/// A registered advert of this node. Dropping it (or [`Advertiser::shutdown`]) withdraws the
/// advert with goodbye packets.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
    withdrawn: bool,
}

/// A live peer view of one cluster (or of all, for listings), from mDNS and static peers.
///
/// Everything in the view is a hint: a caller dialling a peer still authenticates it with the
/// cluster's mTLS checks.
pub struct Discovery {
    rx: watch::Receiver<PeerView>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    stop_tx: Option<mpsc::Sender<()>>,
    daemon: Option<ServiceDaemon>,
    pump: Option<JoinHandle<()>>,
}

/// Browses for `timeout` and returns what was seen: the one-shot listing behind
/// `outpost discover`. `cluster = None` lists every cluster.
pub fn discover(
    config: &DiscoveryConfig,
    cluster: Option<&str>,
    timeout: Duration,
) -> Result<PeerView, DiscoveryError> {
    let d = Discovery::start(config, cluster)?;
    let deadline = Instant::now() + timeout;
    // Wait the whole timeout: mDNS answers trickle in, there is no "complete" signal.
    let view = d.wait_until(deadline, |_| false);
    d.shutdown();
    Ok(view)
}

impl Advertiser {
    /// Registers `advert` under `_outpost._tcp.local.` on the allowed interfaces. Addresses are
    /// taken from the interfaces and re-announced when they change. `Ok(None)` when mDNS is off.
    pub fn start(
        config: &DiscoveryConfig,
        advert: &Advert,
    ) -> Result<Option<Self>, DiscoveryError> {
        if !config.mdns {
            return Ok(None);
        }
        let txt = advert.txt()?;
        let daemon = new_daemon(config)?;
        let mut info = ServiceInfo::new(
            SERVICE_TYPE,
            &advert.name,
            &advert.host_name(),
            "",
            advert.api_port,
            &txt[..],
        )
        .map_err(DiscoveryError::Mdns)?
        .enable_addr_auto();
        info.set_interfaces(vec![interface_kind(config)]);
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        tracing::info!(%fullname, "mDNS advert registered");
        Ok(Some(Self {
            daemon,
            fullname,
            withdrawn: false,
        }))
    }

    /// The full service name as registered (before any conflict renaming).
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraws the advert (goodbye packets, sent twice) and stops the daemon.
    pub fn shutdown(mut self) -> Result<(), DiscoveryError> {
        self.withdraw()
    }

    fn withdraw(&mut self) -> Result<(), DiscoveryError> {
        if self.withdrawn {
            return Ok(());
        }
        self.withdrawn = true;
        let status = self.daemon.unregister(&self.fullname)?;
        let result = status.recv_timeout(Duration::from_secs(2));
        if result.is_ok() {
            // mdns-sd repeats the goodbye 120 ms later; give it the chance before stopping.
            let repeat_at = Instant::now() + Duration::from_millis(150);
            while let Some(left) = repeat_at.checked_duration_since(Instant::now()) {
                std::thread::sleep(left);
            }
        }
        stop_daemon(&self.daemon);
        result
            .map(|_| ())
            .map_err(|_| DiscoveryError::Timeout("goodbye"))
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        if let Err(e) = self.withdraw() {
            tracing::warn!(error = %e, "withdrawing mDNS advert");
        }
    }
}

impl Discovery {
    /// Starts browsing (when `config.mdns`) and resolving the static peers. `cluster` filters
    /// adverts by their TXT cluster id; `None` keeps every cluster.
    pub fn start(config: &DiscoveryConfig, cluster: Option<&str>) -> Result<Self, DiscoveryError> {
        let specs = config
            .peers
            .iter()
            .map(|p| {
                PeerSpec::parse(p).map_err(|source| DiscoveryError::BadPeer {
                    spec: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (daemon, events) = if config.mdns {
            let daemon = new_daemon(config)?;
            let events = daemon.browse(SERVICE_TYPE)?;
            (Some(daemon), Some(events))
        } else {
            (None, None)
        };
        let (tx, rx) = watch::channel(PeerView::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(PeerView::default()),
            cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = mpsc::channel();
        let pump = Pump {
            cluster: cluster.map(str::to_string),
            specs,
            sightings: BTreeMap::new(),
            statics: Vec::new(),
            tx,
            shared: shared.clone(),
            stop: stop.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("outpost-discovery".into())
            .spawn(move || pump.run(events, stop_rx))
            .map_err(DiscoveryError::Thread);
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                if let Some(d) = &daemon {
                    stop_daemon(d);
                }
                return Err(e);
            }
        };
        Ok(Self {
            rx,
            shared,
            stop,
            stop_tx: Some(stop_tx),
            daemon,
            pump: Some(handle),
        })
    }

    /// The current view.
    pub fn view(&self) -> PeerView {
        self.rx.borrow().clone()
    }

    /// A change stream: the receiver is marked changed each time the view changes.
    pub fn subscribe(&self) -> watch::Receiver<PeerView> {
        self.rx.clone()
    }

    /// Blocks until `pred` holds for the view or `deadline` passes; returns the last view
    /// either way (check it again if the difference matters).
    pub fn wait_until(&self, deadline: Instant, pred: impl Fn(&PeerView) -> bool) -> PeerView {
        let mut view = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if pred(&view) {
                return view.clone();
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return view.clone();
            };
            view = self
                .shared
                .cv
                .wait_timeout(view, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stops browsing and the pump thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Closing the stop channel wakes a pump that has no mDNS events to wait on; stopping
        // the daemon closes the event channel of one that has.
        self.stop_tx.take();
        if let Some(d) = self.daemon.take() {
            stop_daemon(&d);
        }
        if let Some(h) = self.pump.take()
            && h.join().is_err()
        {
            tracing::error!("discovery pump thread panicked");
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop_now();
    }
}

struct Shared {
    state: Mutex<PeerView>,
    cv: Condvar,
}

struct Pump {
    cluster: Option<String>,
    specs: Vec<PeerSpec>,
    /// Keyed by mDNS full name.
    sightings: BTreeMap<String, Sighting>,
    statics: Vec<ResolvedStatic>,
    tx: watch::Sender<PeerView>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl Pump {
    fn run(mut self, events: Option<mdns_sd::Receiver<ServiceEvent>>, stop_rx: mpsc::Receiver<()>) {
        let mut next_resolve = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            if now >= next_resolve {
                self.statics = resolve_statics(&self.specs);
                next_resolve = now + STATIC_REFRESH;
                self.publish();
            }
            let wait = next_resolve.saturating_duration_since(Instant::now());
            match &events {
                Some(ev) => match ev.recv_timeout(wait) {
                    Ok(event) => {
                        if self.handle(event) {
                            self.publish();
                        }
                    }
                    Err(mdns_sd::RecvTimeoutError::Timeout) => {}
                    Err(mdns_sd::RecvTimeoutError::Disconnected) => return,
                },
                None => match stop_rx.recv_timeout(wait) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
            }
        }
    }

    /// Applies one daemon event; true when the sightings changed.
    fn handle(&mut self, event: ServiceEvent) -> bool {
        match event {
            ServiceEvent::ServiceResolved(r) => {
                let txt: HashMap<String, String> = r
                    .get_properties()
                    .iter()
                    .map(|p| (p.key().to_string(), p.val_str().to_string()))
                    .collect();
                let addrs = r.get_addresses().iter().map(|a| a.to_ip_addr());
                match parse_sighting(instance_of(r.get_fullname()), &txt, addrs) {
                    Ok(s) => {
                        tracing::debug!(fullname = r.get_fullname(), ?s, "mDNS sighting");
                        let old = self
                            .sightings
                            .insert(r.get_fullname().to_string(), s.clone());
                        old.as_ref() != Some(&s)
                    }
                    Err(e) => {
                        tracing::debug!(fullname = r.get_fullname(), error = %e, "ignoring advert");
                        self.sightings.remove(r.get_fullname()).is_some()
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                tracing::debug!(%fullname, "mDNS withdrawal");
                self.sightings.remove(&fullname).is_some()
            }
            _ => false,
        }
    }

    fn publish(&self) {
        let sightings: Vec<Sighting> = self.sightings.values().cloned().collect();
        let view = merge_view(self.cluster.as_deref(), &sightings, &self.statics);
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *state == view {
            return;
        }
        *state = view.clone();
        // Sent under the lock, so a waiter woken below already finds the watch updated too.
        // Fails only when every receiver is gone, which the Discovery handle prevents.
        let _ = self.tx.send(view);
        drop(state);
        self.shared.cv.notify_all();
    }
}

fn resolve_statics(specs: &[PeerSpec]) -> Vec<ResolvedStatic> {
    specs
        .iter()
        .map(|spec| {
            let addrs = match spec {
                PeerSpec::Addr(a) => vec![*a],
                PeerSpec::Name { host, port } => match (host.as_str(), *port).to_socket_addrs() {
                    Ok(it) => it.collect::<Vec<SocketAddr>>(),
                    Err(e) => {
                        tracing::warn!(peer = %spec, error = %e, "static peer does not resolve");
                        Vec::new()
                    }
                },
            };
            ResolvedStatic {
                spec: spec.clone(),
                addrs,
            }
        })
        .collect()
}

/// A daemon limited to the allowed interfaces, checking for address changes every second.
fn new_daemon(config: &DiscoveryConfig) -> Result<ServiceDaemon, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let setup = (|| {
        daemon.disable_interface(IfKind::All)?;
        daemon.enable_interface(interface_kind(config))?;
        daemon.set_ip_check_interval(ADDRESS_CHECK_INTERVAL_SECS)
    })();
    if let Err(e) = setup {
        stop_daemon(&daemon);
        return Err(e.into());
    }
    Ok(daemon)
}

fn interface_kind(config: &DiscoveryConfig) -> IfKind {
    let allow = config.interfaces.clone();
    IfKind::Predicate(IfPredicate::new(move |intf| {
        interface_allowed(
            &allow,
            &intf.name,
            intf.is_loopback(),
            has_multicast(&intf.name),
        )
    }))
}

fn stop_daemon(daemon: &ServiceDaemon) {
    match daemon.shutdown() {
        Ok(rx) => {
            if rx.recv_timeout(Duration::from_secs(2)).is_err() {
                tracing::warn!("mDNS daemon did not confirm shutdown");
            }
        }
        Err(mdns_sd::Error::DaemonShutdown) => {}
        Err(e) => tracing::warn!(error = %e, "stopping mDNS daemon"),
    }
}

/// Whether the interface has IFF_MULTICAST, asked of the kernel through a socket of the
/// calling thread's network namespace (the daemon thread calls this).
#[cfg(target_os = "linux")]
fn has_multicast(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return false;
    }
    // SAFETY: socket/ioctl/close on a descriptor we own, with a zeroed ifreq whose name is a
    // NUL-terminated copy shorter than IFNAMSIZ (checked above).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        libc::close(fd);
        rc == 0 && (i32::from(req.ifr_ifru.ifru_flags) & libc::IFF_MULTICAST) != 0
    }
}

#[cfg(not(target_os = "linux"))]
fn has_multicast(_name: &str) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_multicast_flag_but_exists() {
        // `lo` is LOOPBACK without MULTICAST on Linux; an unknown name has no flags at all.
        assert!(!has_multicast("lo"));
        assert!(!has_multicast("no-such-if0"));
        assert!(!has_multicast("this-name-is-far-too-long"));
    }

    #[test]
    fn resolve_statics_keeps_literals_and_marks_failures() {
        let specs = vec![
            PeerSpec::parse("127.0.0.1:7443").unwrap(),
            PeerSpec::parse("localhost:7443").unwrap(),
            PeerSpec::parse("does-not-exist.invalid:7443").unwrap(),
        ];
        let r = resolve_statics(&specs);
        assert_eq!(r[0].addrs, vec!["127.0.0.1:7443".parse().unwrap()]);
        assert!(
            r[1].addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7443)
        );
        assert!(!r[1].addrs.is_empty());
        assert!(r[2].addrs.is_empty());
    }

    #[test]
    fn static_only_discovery_needs_no_network() {
        let cfg = DiscoveryConfig {
            mdns: false,
            interfaces: vec![],
            peers: vec!["127.0.0.1:7443".into(), "127.0.0.1:7443".into()],
        };
        let d = Discovery::start(&cfg, Some("A")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let v = d.wait_until(deadline, |v| !v.is_empty());
        assert_eq!(v.len(), 1);
        assert_eq!(
            v.peers[0].api_addrs(),
            vec!["127.0.0.1:7443".parse().unwrap()]
        );
        // The static list is refreshed in the background: the view keeps the same one peer.
        assert_eq!(d.view().len(), 1);
        let started = Instant::now();
        d.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "shutdown must not wait for the refresh"
        );
    }

    #[test]
    fn one_shot_discover_returns_the_view_after_the_timeout() {
        let cfg = DiscoveryConfig {
            mdns: false,
            interfaces: vec![],
            peers: vec!["127.0.0.1:7443".into()],
        };
        let started = Instant::now();
        let v = discover(&cfg, None, Duration::from_millis(300)).unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(v.len(), 1);
        assert_eq!(
            v.peers[0].static_entries,
            vec!["127.0.0.1:7443".to_string()]
        );
    }

    #[test]
    fn bad_static_peer_is_refused_with_its_cause() {
        let cfg = DiscoveryConfig {
            mdns: false,
            interfaces: vec![],
            peers: vec!["node1".into()],
        };
        match Discovery::start(&cfg, None) {
            Err(DiscoveryError::BadPeer { spec, source }) => {
                assert_eq!(spec, "node1");
                assert_eq!(source, crate::config::PeerSpecError::MissingPort);
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("accepted a bad peer"),
        }
    }

    #[test]
    fn advertiser_is_none_without_mdns() {
        let cfg = DiscoveryConfig {
            mdns: false,
            ..DiscoveryConfig::default()
        };
        let advert = Advert {
            name: "n".into(),
            cluster: "c".into(),
            node_id: 1,
            api_port: 1,
            peer_port: 2,
            version: "0".into(),
        };
        assert!(Advertiser::start(&cfg, &advert).unwrap().is_none());
    }
}
