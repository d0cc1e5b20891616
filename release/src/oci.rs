//! OCI image layouts (image-spec v1.1) of one static binary per platform.
//!
//! Reproducible by construction: the layer is a tar written by [`crate::tar`] with sorted entries, numeric owners
//! and one fixed mtime (`SOURCE_DATE_EPOCH`, 0 by default); its gzip stream has no name and no timestamp and comes
//! from the compressor Cargo.lock pins; the JSON documents are written from ordered maps with no clock reading.
//! The same binaries, revision, version and epoch therefore give the same digests on any machine.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::tar::{Entry, archive};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The non-root user the binaries run as, the same UID the chart's securityContext sets.
pub const NONROOT: u32 = 65532;

/// Where the image carries the CA bundle: the path rustls-native-certs (the executor's system roots for Prism
/// Central) reads first on Debian-like systems.
pub const CA_BUNDLE_PATH: &str = "etc/ssl/certs/ca-certificates.crt";

/// An OCI platform, written `os/architecture[/variant]` on the command line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::str::FromStr for Platform {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, architecture, variant) = match parts[..] {
            [os, arch] => (os, arch, None),
            [os, arch, variant] => (os, arch, Some(variant.to_owned())),
            _ => bail!("platform {s:?} is not os/architecture[/variant]"),
        };
        let known = ["amd64", "arm64", "arm", "ppc64le", "s390x", "riscv64", "386"];
        ensure!(os == "linux", "platform {s:?}: only linux images are built");
        ensure!(
            known.contains(&architecture),
            "platform {s:?}: unknown architecture (GOARCH spelling: {known:?})"
        );
        Ok(Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What one image is made of.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The binary's name, which is also the entrypoint `/<name>` and the image's title.
    pub name: String,
    /// `org.opencontainers.image.ref.name` in the layout's index.json (what `oci:DIR:TAG` names).
    pub tag: String,
    /// One static binary per platform.
    pub binaries: BTreeMap<Platform, PathBuf>,
    /// `org.opencontainers.image.*` labels and annotations (version, revision, source, ...).
    pub labels: BTreeMap<String, String>,
    /// `9443/tcp`, ... (documentation for `docker run -P`; Kubernetes ignores it).
    pub exposed_ports: Vec<String>,
    /// A PEM bundle of trust anchors to carry at [`CA_BUNDLE_PATH`], when given.
    pub ca_bundle: Option<Vec<u8>>,
    /// Seconds since the epoch for every timestamp in the image (SOURCE_DATE_EPOCH).
    pub epoch: u64,
}

/// A content descriptor, as it appears in manifests and indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: &'static str,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn json(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The layout being written: content-addressed blobs under `blobs/sha256`.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn blob(&self, media_type: &'static str, data: &[u8]) -> Result<Descriptor> {
        let hex = sha256_hex(data);
        let path = self.root.join("blobs/sha256").join(&hex);
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        Ok(Descriptor {
            media_type,
            digest: format!("sha256:{hex}"),
            size: data.len() as u64,
        })
    }

    fn json_blob(&self, media_type: &'static str, value: &Value) -> Result<Descriptor> {
        self.blob(media_type, &serde_json::to_vec(value)?)
    }
}

fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string()
}

/// The files of the image, sorted by path: what a non-root static binary expects to find (a passwd entry for its
/// UID, a writable /tmp, a home), the optional CA bundle, and the binary itself.
pub fn layer_entries(name: &str, binary: Vec<u8>, ca_bundle: Option<&[u8]>) -> Vec<Entry> {
    let mut entries = vec![
        Entry::dir("etc", 0o755, 0),
        Entry::file("etc/group", 0o644, format!("root:x:0:\nnonroot:x:{NONROOT}:\n").into_bytes()),
        Entry::file(
            "etc/passwd",
            0o644,
            format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n")
                .into_bytes(),
        ),
        Entry::dir("home", 0o755, 0),
        Entry::dir("home/nonroot", 0o700, NONROOT),
        Entry::dir("tmp", 0o1777, 0),
        Entry::file(name, 0o755, binary),
    ];
    if let Some(bundle) = ca_bundle {
        entries.push(Entry::dir("etc/ssl", 0o755, 0));
        entries.push(Entry::dir("etc/ssl/certs", 0o755, 0));
        entries.push(Entry::file(CA_BUNDLE_PATH, 0o644, bundle.to_vec()));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries
}

/// Writes the image layout into `out` (which must not exist yet, or be empty) and returns the descriptor of the
/// multi-platform image index that `index.json` names with `spec.tag`.
pub fn write_layout(out: &Path, spec: &ImageSpec) -> Result<Descriptor> {
    ensure!(!spec.binaries.is_empty(), "no binary given");
    ensure!(
        !spec.name.is_empty()
            && spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "image name {:?} must be a plain file name",
        spec.name
    );
    if out.exists() {
        ensure!(
            std::fs::read_dir(out)?.next().is_none(),
            "{} exists and is not empty; remove it first",
            out.display()
        );
    }
    std::fs::create_dir_all(out.join("blobs/sha256"))?;
    let layout = Layout {
        root: out.to_path_buf(),
    };
    let created = rfc3339(spec.epoch);
    let mut labels = spec.labels.clone();
    labels.insert("org.opencontainers.image.title".into(), spec.name.clone());
    labels.insert("org.opencontainers.image.created".into(), created.clone());

    let mut manifests = Vec::new();
    for (platform, path) in &spec.binaries {
        let binary = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let tar = archive(
            &layer_entries(&spec.name, binary, spec.ca_bundle.as_deref()),
            spec.epoch,
        )?;
        let diff_id = format!("sha256:{}", sha256_hex(&tar));
        // No file name and mtime 0 in the gzip header (GzBuilder's defaults); the OS byte is fixed by flate2.
        let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar)?;
        let layer = layout.blob(MEDIA_LAYER, &gz.finish()?)?;

        let ports: serde_json::Map<String, Value> = spec
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        let mut config = json!({
            "created": created,
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {
                "User": format!("{NONROOT}:{NONROOT}"),
                "Entrypoint": [format!("/{}", spec.name)],
                "WorkingDir": "/",
                "ExposedPorts": ports,
                "Labels": labels,
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{
                "created": created,
                "created_by": format!("konnector-image: /{} (static), /etc/passwd, /etc/group, /tmp{}", spec.name,
                    if spec.ca_bundle.is_some() { ", CA bundle" } else { "" }),
            }],
        });
        if let Some(variant) = &platform.variant {
            config["variant"] = json!(variant);
        }
        let config = layout.json_blob(MEDIA_CONFIG, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.json(),
            "layers": [layer.json()],
            "annotations": labels,
        });
        let manifest = layout.json_blob(MEDIA_MANIFEST, &manifest)?;
        let mut entry = manifest.json();
        entry["platform"] = json!({ "os": platform.os, "architecture": platform.architecture });
        if let Some(variant) = &platform.variant {
            entry["platform"]["variant"] = json!(variant);
        }
        manifests.push(entry);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": manifests,
        "annotations": labels,
    });
    let index = layout.json_blob(MEDIA_INDEX, &index)?;

    let mut top = index.json();
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": spec.tag });
    std::fs::write(
        out.join("index.json"),
        serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [top] }))?,
    )?;
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, contents: &[u8]) -> ImageSpec {
        let bin = dir.join("konnector-gateway");
        std::fs::write(&bin, contents).unwrap();
        ImageSpec {
            name: "konnector-gateway".into(),
            tag: "0.1.0".into(),
            binaries: [
                ("linux/amd64".parse().unwrap(), bin.clone()),
                ("linux/arm64".parse().unwrap(), bin),
            ]
            .into(),
            labels: [("org.opencontainers.image.revision".to_owned(), "abc".to_owned())].into(),
            exposed_ports: vec!["9443/tcp".into()],
            ca_bundle: None,
            epoch: 0,
        }
    }

    #[test]
    fn same_inputs_same_digest_other_binary_other_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write_layout(&tmp.path().join("a"), &spec(tmp.path(), b"\x7fELF one")).unwrap();
        let b = write_layout(&tmp.path().join("b"), &spec(tmp.path(), b"\x7fELF one")).unwrap();
        assert_eq!(a, b);
        let c = write_layout(&tmp.path().join("c"), &spec(tmp.path(), b"\x7fELF two")).unwrap();
        assert_ne!(a.digest, c.digest);
        let mut later = spec(tmp.path(), b"\x7fELF one");
        later.epoch = 1;
        assert_ne!(
            a.digest,
            write_layout(&tmp.path().join("d"), &later).unwrap().digest
        );
    }

    #[test]
    fn blobs_are_named_by_their_digest() {
        let tmp = tempfile::tempdir().unwrap();
        write_layout(&tmp.path().join("l"), &spec(tmp.path(), b"bin")).unwrap();
        let blobs = tmp.path().join("l/blobs/sha256");
        let names: Vec<_> = std::fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        // One index, and per platform a manifest and a config; the two layers are the same blob.
        assert_eq!(names.len(), 6, "{names:?}");
        for name in names {
            let data = std::fs::read(blobs.join(&name)).unwrap();
            assert_eq!(sha256_hex(&data), name.to_str().unwrap());
        }
    }

    #[test]
    fn refuses_a_non_empty_output_and_bad_platforms() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("junk"), "x").unwrap();
        assert!(write_layout(tmp.path(), &spec(tmp.path(), b"bin")).is_err());
        assert!("linux".parse::<Platform>().is_err());
        assert!("windows/amd64".parse::<Platform>().is_err());
        assert!("linux/x86_64".parse::<Platform>().is_err());
        assert_eq!(
            "linux/arm64/v8".parse::<Platform>().unwrap().to_string(),
            "linux/arm64/v8"
        );
    }
}
