//! The Runtime SDK hook catalogue: which hooks konnector serves, what they are called on the wire, and which CAPI
//! release first knows each hook, so Discovery never advertises a hook the running CAPI would reject.

use std::{fmt, str::FromStr};

/// The hook API group/version. No other version has ever existed on the wire.
pub const HOOKS_API_VERSION: &str = "hooks.runtime.cluster.x-k8s.io/v1alpha1";

/// A CAPI release, compared by major and minor only (patch releases never change the hook catalogue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapiVersion {
    /// Major version, 1 for every release so far.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl CapiVersion {
    /// Builds `v<major>.<minor>`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for CapiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)
    }
}

/// Why a `--capi-version` value was rejected.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid CAPI version {0:?}: expected v<major>.<minor> or v<major>.<minor>.<patch>, e.g. v1.12 or v1.12.3"
)]
pub struct ParseCapiVersionError(String);

impl FromStr for CapiVersion {
    type Err = ParseCapiVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCapiVersionError(s.to_owned());
        let rest = s.trim().strip_prefix('v').unwrap_or(s.trim());
        // A pre-release or build suffix (v1.14.0-rc.1, v1.12.3+build) never changes the hook catalogue.
        let core = rest.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        match parts.next() {
            None => {}
            Some(patch) if patch.parse::<u32>().is_ok() => {}
            Some(_) => return Err(err()),
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self { major, minor })
    }
}

/// Every hook of `hooks.runtime.cluster.x-k8s.io/v1alpha1`, with the first CAPI release whose catalogue registers
/// it. Discovery consults this table for each hook it would advertise: a hook CAPI does not know makes discovery of
/// the whole ExtensionConfig fail.
pub const CATALOGUE: &[(&str, CapiVersion)] = &[
    ("BeforeClusterCreate", CapiVersion::new(1, 2)),
    ("AfterControlPlaneInitialized", CapiVersion::new(1, 2)),
    ("BeforeClusterUpgrade", CapiVersion::new(1, 2)),
    ("AfterControlPlaneUpgrade", CapiVersion::new(1, 2)),
    ("AfterClusterUpgrade", CapiVersion::new(1, 2)),
    ("BeforeClusterDelete", CapiVersion::new(1, 2)),
    ("GeneratePatches", CapiVersion::new(1, 2)),
    ("ValidateTopology", CapiVersion::new(1, 2)),
    ("DiscoverVariables", CapiVersion::new(1, 4)),
    ("BeforeControlPlaneUpgrade", CapiVersion::new(1, 12)),
    ("BeforeWorkersUpgrade", CapiVersion::new(1, 12)),
    ("AfterWorkersUpgrade", CapiVersion::new(1, 12)),
    ("GenerateUpgradePlan", CapiVersion::new(1, 12)),
    ("CanUpdateMachine", CapiVersion::new(1, 12)),
    ("CanUpdateMachineSet", CapiVersion::new(1, 12)),
    ("UpdateMachine", CapiVersion::new(1, 12)),
];

/// Whether CAPI `capi` registers the hook named `hook` (case-sensitive, as in the Go catalogue). Unknown names are
/// never known.
pub fn capi_knows(hook: &str, capi: CapiVersion) -> bool {
    CATALOGUE
        .iter()
        .any(|(name, since)| *name == hook && capi >= *since)
}

/// The hooks konnector serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Installs the agent once the control plane is up. Non-blocking: its answer has no `retryAfterSeconds`.
    AfterControlPlaneInitialized,
    /// Re-applies the agent before an upgrade. Blocking.
    BeforeClusterUpgrade,
    /// Uninstalls the agent and holds deletion until that is done. Blocking.
    BeforeClusterDelete,
}

impl Hook {
    /// Every hook konnector serves, in Discovery order.
    pub const ALL: [Hook; 3] = [
        Hook::AfterControlPlaneInitialized,
        Hook::BeforeClusterUpgrade,
        Hook::BeforeClusterDelete,
    ];

    /// The hook's name as in the CAPI catalogue.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::AfterControlPlaneInitialized => "AfterControlPlaneInitialized",
            Hook::BeforeClusterUpgrade => "BeforeClusterUpgrade",
            Hook::BeforeClusterDelete => "BeforeClusterDelete",
        }
    }

    /// The lower-cased hook name, the path segment CAPI builds.
    pub const fn path_segment(self) -> &'static str {
        match self {
            Hook::AfterControlPlaneInitialized => "aftercontrolplaneinitialized",
            Hook::BeforeClusterUpgrade => "beforeclusterupgrade",
            Hook::BeforeClusterDelete => "beforeclusterdelete",
        }
    }

    /// The handler name konnector advertises for this hook: a DNS-1123 label, unique in the Discovery answer.
    pub const fn handler_name(self) -> &'static str {
        match self {
            Hook::AfterControlPlaneInitialized => "konnector-acpi",
            Hook::BeforeClusterUpgrade => "konnector-bcu",
            Hook::BeforeClusterDelete => "konnector-bcd",
        }
    }

    /// The request `kind` CAPI sends.
    pub const fn request_kind(self) -> &'static str {
        match self {
            Hook::AfterControlPlaneInitialized => "AfterControlPlaneInitializedRequest",
            Hook::BeforeClusterUpgrade => "BeforeClusterUpgradeRequest",
            Hook::BeforeClusterDelete => "BeforeClusterDeleteRequest",
        }
    }

    /// The response `kind` konnector answers with.
    pub const fn response_kind(self) -> &'static str {
        match self {
            Hook::AfterControlPlaneInitialized => "AfterControlPlaneInitializedResponse",
            Hook::BeforeClusterUpgrade => "BeforeClusterUpgradeResponse",
            Hook::BeforeClusterDelete => "BeforeClusterDeleteResponse",
        }
    }

    /// Whether the response type carries `retryAfterSeconds`. When it does, konnector always sends it.
    pub const fn is_blocking(self) -> bool {
        !matches!(self, Hook::AfterControlPlaneInitialized)
    }

    /// The URL path, below the prefix, at which CAPI calls this hook's handler.
    pub fn path(self) -> String {
        format!(
            "/{HOOKS_API_VERSION}/{}/{}",
            self.path_segment(),
            self.handler_name()
        )
    }

    /// Finds the hook by its path segments, if konnector serves it.
    pub fn from_path(segment: &str, handler: &str) -> Option<Hook> {
        Hook::ALL
            .into_iter()
            .find(|h| h.path_segment() == segment && h.handler_name() == handler)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `s` is a DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, ≤ 63 bytes.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!("v1.12".parse::<CapiVersion>().unwrap(), CapiVersion::new(1, 12));
        assert_eq!("1.10.5".parse::<CapiVersion>().unwrap(), CapiVersion::new(1, 10));
        assert_eq!(
            "v1.14.0-rc.1".parse::<CapiVersion>().unwrap(),
            CapiVersion::new(1, 14)
        );
        for bad in ["", "v1", "vx.y", "1.2.3.4", "v1.12.x", "latest"] {
            assert!(bad.parse::<CapiVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn catalogue_gates_new_hooks() {
        assert!(!capi_knows("BeforeControlPlaneUpgrade", CapiVersion::new(1, 11)));
        assert!(capi_knows("BeforeControlPlaneUpgrade", CapiVersion::new(1, 12)));
        assert!(!capi_knows("NoSuchHook", CapiVersion::new(9, 0)));
        for minor in 10..=14 {
            for hook in Hook::ALL {
                assert!(capi_knows(hook.name(), CapiVersion::new(1, minor)));
            }
        }
    }

    #[test]
    fn names_and_paths() {
        for hook in Hook::ALL {
            assert!(is_dns1123_label(hook.handler_name()));
            assert_eq!(hook.path_segment(), hook.name().to_ascii_lowercase());
            assert_eq!(hook.request_kind(), format!("{}Request", hook.name()));
            assert_eq!(hook.response_kind(), format!("{}Response", hook.name()));
            assert_eq!(
                Hook::from_path(hook.path_segment(), hook.handler_name()),
                Some(hook)
            );
        }
        assert_eq!(
            Hook::BeforeClusterDelete.path(),
            "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterdelete/konnector-bcd"
        );
        assert!(!is_dns1123_label("-a") && !is_dns1123_label("A") && !is_dns1123_label(&"a".repeat(64)));
    }
}
