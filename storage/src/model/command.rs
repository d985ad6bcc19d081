//! What the leader and the codec ask of a command besides applying it: its name, the oldest
//! command format that carries it, whether it is a quiet touch (no audit row), and why a
//! leader refuses it from a peer.

use super::{Command, RolloutStep, SIGNED_ONLY_WHY, signed_only_key};

impl Command {
    /// Whether this command, accepted, leaves no audit row (`Quiet` around a touch).
    pub fn is_quiet(&self) -> bool {
        match self {
            Command::Quiet(inner) => matches!(
                inner.as_ref(),
                Command::TouchClients { .. } | Command::TouchConsoleSessions { .. }
            ),
            _ => false,
        }
    }
}

impl Command {
    /// Why a leader refuses this command when a peer forwards it, if it does. Policy added
    /// after a command format shipped lives at the proposers (the API and this check), so
    /// that `apply` keeps accepting what older nodes accepted and mixed versions never
    /// diverge: the legacy unsigned `ImportBundle` and unlimited `RenewClientCert` (this
    /// version proposes `ImportSignedBundle` and `RotateClientCert`), and `SetConfig` of an
    /// `agent.handler.*` or `agent.check.*` key (set only by a signed bundle's config payload).
    pub fn refused_from_peers(&self) -> Option<&'static str> {
        match self {
            Command::Once { command, .. } => command.refused_from_peers(),
            Command::ImportBundle(_) => {
                Some("unsigned bundle commands are not accepted: commit the signed bytes")
            }
            Command::RenewClientCert { .. } => {
                Some("unbounded certificate renewals are not accepted: use RotateClientCert")
            }
            Command::SetConfig { key, .. } if signed_only_key(key) => Some(SIGNED_ONLY_WHY),
            Command::ReformCluster { .. } => {
                Some("a cluster is reformed only offline, by outpost restore or outpost recover")
            }
            Command::Quiet(command) => command.refused_from_peers(),
            _ => None,
        }
    }

    /// Why a leader refuses this command when node `from` forwards it with `actor` (the
    /// actor text the forwarder stamped), beyond `refused_from_peers`. A node forwards two
    /// kinds of commands: its own (actor `node:{from}`, `node:{from}:discovery`, or
    /// `auto-remove`), which are only its reports and the upkeep it runs (last-seen times,
    /// blobs and binary held, console session use and sign-in locks, retention's compactions,
    /// node roles and removal, the rolling upgrade's steps, the rollouts' timed steps: start,
    /// open a phase, finish),
    /// each about itself where it names a node; and those of the callers it served (an admin,
    /// the local socket, a console operator, a client, a joiner), which carry that caller's
    /// actor. So a node may not commit an admin's command as itself, report for another node,
    /// or speak as another node. A console session starts only as its own operator, and a
    /// console login link is made only by an admin.
    pub fn refused_from_peer(&self, from: u64, actor: &str) -> Option<String> {
        if let Some(why) = self.refused_from_peers() {
            return Some(why.to_owned());
        }
        let command = match self {
            Command::Once { command, .. } => command.as_ref(),
            other => other,
        };
        let command = match command {
            Command::Quiet(command) => command.as_ref(),
            other => other,
        };
        let own = format!("node:{from}");
        let as_itself = actor == own
            || actor
                .strip_prefix(own.as_str())
                .is_some_and(|r| r.starts_with(':'))
            || actor == "auto-remove";
        if !as_itself && actor.starts_with("node:") {
            return Some(format!(
                "node {from} may not forward a command as another node ({})",
                actor.chars().take(40).collect::<String>()
            ));
        }
        let about = match command {
            Command::TouchClients { node_id, .. }
            | Command::BlobsHeld { node_id, .. }
            | Command::ReportBinary { node_id, .. }
            | Command::TouchConsoleSessions { node_id, .. } => Some(Some(*node_id)),
            // Retention is the leader's own upkeep: never an admin's or a client's command.
            Command::LockSignIn { .. } | Command::CompactHistory { .. } => Some(None),
            Command::UpdateNode { .. }
            | Command::RemoveNode { .. }
            | Command::RollNode { .. }
            | Command::EndRoll { .. }
            | Command::RolloutStep {
                step: RolloutStep::Start | RolloutStep::OpenPhase(_) | RolloutStep::Finish,
                ..
            } => None,
            _ if as_itself => {
                return Some(format!(
                    "node {from} may not commit {} as itself: only an admin's or a client's request carries it",
                    command.kind()
                ));
            }
            Command::CreateConsoleLogin { .. }
                if !(actor == "local-admin" || actor.starts_with("admin:")) =>
            {
                return Some("a console login link is made only by an admin".into());
            }
            Command::StartConsoleSession { user, .. }
                if actor.strip_prefix("console:") != Some(user.as_str()) =>
            {
                return Some(format!(
                    "a console session of {user} starts only as console:{user}"
                ));
            }
            _ => return None,
        };
        match about {
            Some(_) if !as_itself || actor == "auto-remove" => Some(format!(
                "{} is a node's own report: node {from} forwards it only as node:{from}",
                command.kind()
            )),
            Some(Some(id)) if id != from => {
                Some(format!("node {from} may not report for node {id}"))
            }
            _ => None,
        }
    }

    /// The command's name, for refusals.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::InitCluster { .. } => "InitCluster",
            Command::AddNode { .. } => "AddNode",
            Command::JoinNode { .. } => "JoinNode",
            Command::UpdateNode { .. } => "UpdateNode",
            Command::RemoveNode { .. } => "RemoveNode",
            Command::SetConfig { .. } => "SetConfig",
            Command::DeleteConfig { .. } => "DeleteConfig",
            Command::CreateToken { .. } => "CreateToken",
            Command::RevokeToken { .. } => "RevokeToken",
            Command::EnrollClient { .. } => "EnrollClient",
            Command::RevokeClient { .. } => "RevokeClient",
            Command::TouchClients { .. } => "TouchClients",
            Command::ReportInventory { .. } => "ReportInventory",
            Command::SetBundleTrust { .. } => "SetBundleTrust",
            Command::ImportBundle(_) => "ImportBundle",
            Command::BlobsHeld { .. } => "BlobsHeld",
            Command::CreateDeployment { .. } => "CreateDeployment",
            Command::ReportDeployment { .. } => "ReportDeployment",
            Command::RenewClientCert { .. } => "RenewClientCert",
            Command::ImportSignedBundle(_) => "ImportSignedBundle",
            Command::RevokeAdmin { .. } => "RevokeAdmin",
            Command::SetRole { .. } => "SetRole",
            Command::RotateClientCert { .. } => "RotateClientCert",
            Command::ConfirmClientCert { .. } => "ConfirmClientCert",
            Command::Once { command, .. } => command.kind(),
            Command::ReformCluster { .. } => "ReformCluster",
            Command::ReportBinary { .. } => "ReportBinary",
            Command::StartRoll { .. } => "StartRoll",
            Command::RollNode { .. } => "RollNode",
            Command::EndRoll { .. } => "EndRoll",
            Command::CreateReleaseDeployment { .. } => "CreateReleaseDeployment",
            Command::SetConsoleUser { .. } => "SetConsoleUser",
            Command::RemoveConsoleUser { .. } => "RemoveConsoleUser",
            Command::CreateConsoleLogin { .. } => "CreateConsoleLogin",
            Command::StartConsoleSession { .. } => "StartConsoleSession",
            Command::EndConsoleSession { .. } => "EndConsoleSession",
            Command::TouchConsoleSessions { .. } => "TouchConsoleSessions",
            Command::LockSignIn { .. } => "LockSignIn",
            Command::LabelClients { .. } => "LabelClients",
            Command::CreateRollout(_) => "CreateRollout",
            Command::RolloutStep { .. } => "RolloutStep",
            Command::ReportRemoval { .. } => "ReportRemoval",
            Command::Quiet(command) => command.kind(),
            Command::CompactHistory { .. } => "CompactHistory",
        }
    }

    /// The oldest command format that can carry this command: a batch is written in the
    /// highest format of its commands, so nodes that do not know a new command stop exactly
    /// where one appears (and ask for an upgrade) instead of at every entry.
    pub fn format(&self) -> u16 {
        match self {
            Command::EnrollClient { .. }
            | Command::RevokeClient { .. }
            | Command::TouchClients { .. }
            | Command::ReportInventory { .. } => 2,
            Command::SetBundleTrust { .. }
            | Command::ImportBundle(_)
            | Command::BlobsHeld { .. }
            | Command::CreateDeployment { .. }
            | Command::ReportDeployment { .. }
            | Command::RenewClientCert { .. } => 3,
            Command::ImportSignedBundle(_)
            | Command::RevokeAdmin { .. }
            | Command::RotateClientCert { .. }
            | Command::ConfirmClientCert { .. } => 4,
            Command::Once { command, .. } => command.format().max(5),
            Command::ReformCluster { .. }
            | Command::ReportBinary { .. }
            | Command::StartRoll { .. }
            | Command::RollNode { .. }
            | Command::EndRoll { .. }
            | Command::CreateReleaseDeployment { .. }
            | Command::SetConsoleUser { .. }
            | Command::RemoveConsoleUser { .. }
            | Command::CreateConsoleLogin { .. }
            | Command::StartConsoleSession { .. }
            | Command::EndConsoleSession { .. }
            | Command::TouchConsoleSessions { .. } => 6,
            Command::LockSignIn { .. } => 7,
            Command::LabelClients { .. }
            | Command::CreateRollout(_)
            | Command::RolloutStep { .. }
            | Command::ReportRemoval { .. } => 8,
            Command::Quiet(command) => command.format().max(9),
            Command::CompactHistory { .. } => 9,
            Command::SetRole { .. } => 10,
            _ => 1,
        }
    }
}
