//! The software bill of materials of an image: a CycloneDX 1.5 JSON document.
//!
//! `bake-agent sbom` writes it inside the image at the end of the build (packer/scripts/
//! cleanup.sh): the OS packages (Debian's dpkg database, or rpm's), the app's npm lockfile
//! entries that are installed, the agent's own crates (from its lockfile, embedded at compile
//! time) and the agent itself. `bake build` stores it in S3 with its SHA-256 in the AMI's tags;
//! `bake release` prints [`diff`] between the running image's SBOM and the new one.
//!
//! Each component carries a package URL (purl, <https://github.com/package-url/purl-spec>):
//! `pkg:deb/debian/NAME@VERSION?arch=ARCH`, `pkg:rpm/amzn/NAME@VERSION?arch=ARCH`,
//! `pkg:npm/NAME@VERSION`, `pkg:cargo/NAME@VERSION`. Its type (`deb`, `npm`, …) is the
//! ecosystem [`diff`] groups by.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// CycloneDX's `bomFormat`.
pub const BOM_FORMAT: &str = "CycloneDX";
/// The CycloneDX version written.
pub const SPEC_VERSION: &str = "1.5";

/// A CycloneDX document (the parts bake writes and reads; anything else is kept in `extra`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bom {
    /// Always `CycloneDX`.
    pub bom_format: String,
    /// `1.5`.
    pub spec_version: String,
    /// `urn:uuid:…`, different for every document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// The document's version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// When, by what, about what.
    #[serde(default)]
    pub metadata: Metadata,
    /// The components.
    #[serde(default)]
    pub components: Vec<Component>,
}

fn one() -> u32 {
    1
}

/// `metadata`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The tools that made the document (`{"components": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Tools>,
    /// The thing described: the image's operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Component>,
}

/// `metadata.tools` in its CycloneDX 1.5 form.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Tools {
    /// The tools as components.
    #[serde(default)]
    pub components: Vec<Component>,
}

/// One component.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Component {
    /// `library`, `application`, `operating-system`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unique within the document: the purl.
    #[serde(rename = "bom-ref", default, skip_serializing_if = "Option::is_none")]
    pub bom_ref: Option<String>,
    /// Name (npm: with its scope, `@scope/name`).
    pub name: String,
    /// Version as the ecosystem writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Package URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    /// Digests (cargo: the crate's SHA-256 from the lockfile).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<Hash>,
}

/// A digest of a component.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hash {
    /// `SHA-256`, `SHA-512`.
    pub alg: String,
    /// Hex.
    pub content: String,
}

impl Component {
    /// A component without a package URL (the document's subject: the image's OS).
    #[must_use]
    pub fn new(kind: &str, name: &str, version: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            bom_ref: None,
            name: name.to_owned(),
            version: Some(version.to_owned()),
            purl: None,
            hashes: Vec::new(),
        }
    }

    /// A library (or application) with a purl of `ecosystem` (its type), `namespace` (deb:
    /// `debian`) and `qualifiers` (`arch=amd64`).
    #[must_use]
    pub fn package(
        kind: &str,
        ecosystem: &str,
        namespace: Option<&str>,
        name: &str,
        version: &str,
        qualifiers: &[(&str, &str)],
    ) -> Self {
        let purl = purl(ecosystem, namespace, name, version, qualifiers);
        Self {
            kind: kind.to_owned(),
            bom_ref: Some(purl.clone()),
            name: name.to_owned(),
            version: Some(version.to_owned()),
            purl: Some(purl),
            hashes: Vec::new(),
        }
    }

    /// The purl's type (`deb`, `rpm`, `npm`, `cargo`), or `other`.
    #[must_use]
    pub fn ecosystem(&self) -> &str {
        self.purl
            .as_deref()
            .and_then(|p| p.strip_prefix("pkg:"))
            .and_then(|p| p.split('/').next())
            .filter(|t| !t.is_empty())
            .unwrap_or("other")
    }
}

/// Percent-encodes everything but purl's unreserved characters (`A-Z a-z 0-9 . - _ ~`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A package URL: `pkg:TYPE/[NAMESPACE/]NAME@VERSION[?k=v&…]`, each part percent-encoded (an
/// npm scope is the namespace: `pkg:npm/%40scope/name@1.0.0`).
#[must_use]
pub fn purl(
    ecosystem: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &[(&str, &str)],
) -> String {
    let (namespace, name) = match (namespace, name.split_once('/')) {
        (None, Some((scope, n))) if scope.starts_with('@') => (Some(scope), n),
        _ => (namespace, name),
    };
    let mut p = format!("pkg:{ecosystem}/");
    if let Some(ns) = namespace {
        p.push_str(&encode(ns));
        p.push('/');
    }
    p.push_str(&encode(name));
    p.push('@');
    p.push_str(&encode(version));
    for (i, (k, v)) in qualifiers.iter().enumerate() {
        p.push(if i == 0 { '?' } else { '&' });
        p.push_str(k);
        p.push('=');
        p.push_str(&encode(v));
    }
    p
}

impl Bom {
    /// A new document about `subject` (the image's OS) made by `tool` at `timestamp`.
    #[must_use]
    pub fn new(
        serial: &str,
        timestamp: &str,
        tool: Component,
        subject: Component,
        components: Vec<Component>,
    ) -> Self {
        Self {
            bom_format: BOM_FORMAT.to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            serial_number: Some(format!("urn:uuid:{serial}")),
            version: 1,
            metadata: Metadata {
                timestamp: Some(timestamp.to_owned()),
                tools: Some(Tools {
                    components: vec![tool],
                }),
                component: Some(subject),
            },
            components,
        }
    }

    /// Parses a document, refusing anything that is not CycloneDX JSON.
    ///
    /// # Errors
    /// Not JSON, not the document's shape, or `bomFormat` not `CycloneDX`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SbomError> {
        let bom: Self = serde_json::from_slice(bytes).map_err(SbomError::Json)?;
        if bom.bom_format != BOM_FORMAT {
            return Err(SbomError::NotCycloneDx(bom.bom_format));
        }
        Ok(bom)
    }

    /// How many components per ecosystem.
    #[must_use]
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for comp in &self.components {
            *c.entry(comp.ecosystem().to_owned()).or_insert(0) += 1;
        }
        c
    }
}

/// A document that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// Not JSON of a CycloneDX document's shape.
    #[error("not a CycloneDX JSON document: {0}")]
    Json(serde_json::Error),
    /// JSON, but `bomFormat` says otherwise.
    #[error("bomFormat is {0:?}, not \"CycloneDX\"")]
    NotCycloneDx(String),
}

/// Compares two versions of `ecosystem`: Debian's and rpm's by dpkg's algorithm
/// (deb-version(7)), npm's and cargo's as semantic versions (dpkg's algorithm for a version
/// that is not one).
#[must_use]
pub fn compare_versions(ecosystem: &str, a: &str, b: &str) -> Ordering {
    if matches!(ecosystem, "npm" | "cargo") {
        if let (Ok(x), Ok(y)) = (semver::Version::parse(a), semver::Version::parse(b)) {
            return x.cmp(&y);
        }
    }
    deb_version::compare_versions(a, b)
}

/// One component whose version changed between two documents.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `deb`, `npm`, `cargo`, …
    pub ecosystem: String,
    /// Its name.
    pub name: String,
    /// The version in the running image.
    pub from: String,
    /// The version in the new image.
    pub to: String,
}

/// One component only in one of the documents.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    /// `deb`, `npm`, `cargo`, …
    pub ecosystem: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// The difference between two SBOMs, by ecosystem and name. A name with one version on each
/// side whose version differs is upgraded or downgraded; a name with several versions on a side
/// (two versions of one crate) is compared version by version: added and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    /// In the new image only.
    pub added: Vec<Package>,
    /// In the running image only.
    pub removed: Vec<Package>,
    /// A newer version in the new image.
    pub upgraded: Vec<Change>,
    /// An older version in the new image.
    pub downgraded: Vec<Change>,
    /// Components the same in both.
    pub unchanged: usize,
}

impl Diff {
    /// Nothing added, removed or changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.downgraded.is_empty()
    }

    /// `3 added, 1 removed, 12 upgraded, 0 downgraded (480 unchanged)`.
    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "{} added, {} removed, {} upgraded, {} downgraded ({} unchanged)",
            self.added.len(),
            self.removed.len(),
            self.upgraded.len(),
            self.downgraded.len(),
            self.unchanged
        )
    }

    /// One line per difference: `+ deb libfoo 1.2`, `- npm left-pad 1.0.0`,
    /// `↑ deb openssl 3.0.11-1 → 3.0.13-1`, `↓ …`.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.added {
            out.push(format!("+ {} {} {}", p.ecosystem, p.name, p.version));
        }
        for p in &self.removed {
            out.push(format!("- {} {} {}", p.ecosystem, p.name, p.version));
        }
        for c in &self.upgraded {
            out.push(format!(
                "↑ {} {} {} → {}",
                c.ecosystem, c.name, c.from, c.to
            ));
        }
        for c in &self.downgraded {
            out.push(format!(
                "↓ {} {} {} → {}",
                c.ecosystem, c.name, c.from, c.to
            ));
        }
        out
    }
}

type Versions = BTreeMap<(String, String), BTreeSet<String>>;

fn versions(bom: &Bom) -> Versions {
    let mut v = Versions::new();
    for c in &bom.components {
        v.entry((c.ecosystem().to_owned(), c.name.clone()))
            .or_default()
            .insert(c.version.clone().unwrap_or_default());
    }
    v
}

/// What changed from `running` to `new`.
#[must_use]
pub fn diff(running: &Bom, new: &Bom) -> Diff {
    let old = versions(running);
    let new = versions(new);
    let mut d = Diff::default();
    let package = |(eco, name): &(String, String), version: &str| Package {
        ecosystem: eco.clone(),
        name: name.clone(),
        version: version.to_owned(),
    };
    for (key, was) in &old {
        let Some(now) = new.get(key) else {
            d.removed.extend(was.iter().map(|v| package(key, v)));
            continue;
        };
        let gone: Vec<&String> = was.difference(now).collect();
        let came: Vec<&String> = now.difference(was).collect();
        d.unchanged += was.intersection(now).count();
        if let ([from], [to]) = (gone.as_slice(), came.as_slice()) {
            let change = Change {
                ecosystem: key.0.clone(),
                name: key.1.clone(),
                from: (*from).clone(),
                to: (*to).clone(),
            };
            // A generic component (the app, the agent) has no version order: a change is the
            // new release.
            if key.0 != "generic" && compare_versions(&key.0, from, to) == Ordering::Greater {
                d.downgraded.push(change);
            } else {
                d.upgraded.push(change);
            }
        } else {
            d.removed.extend(gone.iter().map(|v| package(key, v)));
            d.added.extend(came.iter().map(|v| package(key, v)));
        }
    }
    for (key, now) in &new {
        if !old.contains_key(key) {
            d.added.extend(now.iter().map(|v| package(key, v)));
        }
    }
    d
}

/// The installed packages of a dpkg status file (`/var/lib/dpkg/status`): every stanza whose
/// `Status:` ends in `installed`, as `(name, version, architecture)`, sorted.
#[must_use]
pub fn dpkg_installed(status: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut arch = None;
        let mut installed = false;
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue; // a continuation line of a multi-line field
            }
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match field {
                "Package" => name = Some(value.to_owned()),
                "Version" => version = Some(value.to_owned()),
                "Architecture" => arch = Some(value.to_owned()),
                "Status" => installed = value.split_whitespace().nth(2) == Some("installed"),
                _ => {}
            }
        }
        if let (true, Some(n), Some(v)) = (installed, name, version) {
            out.push((n, v, arch.unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// An npm lockfile (`package-lock.json`, lockfileVersion 1, 2 or 3): the app's own name and
/// version, and its packages as `(install path, name, version, integrity)`, sorted by path:
/// v2/v3's `packages` map (not the root entry `""`, not `link` entries: workspace links are the
/// app's own code), or v1's nested `dependencies`.
///
/// # Errors
/// Not JSON, or neither `packages` nor `dependencies` is an object.
pub fn npm_lock(text: &str) -> Result<NpmLock, String> {
    let lock: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = Vec::new();
    if let Some(packages) = lock.get("packages").and_then(|p| p.as_object()) {
        for (path, entry) in packages {
            if path.is_empty()
                || entry.get("link").and_then(serde_json::Value::as_bool) == Some(true)
            {
                continue;
            }
            let name = entry
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_owned)
                .or_else(|| path.rsplit_once("node_modules/").map(|(_, n)| n.to_owned()))
                .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_owned());
            out.push(NpmPackage::of(path.clone(), name, entry));
        }
    } else if let Some(deps) = lock.get("dependencies").and_then(|d| d.as_object()) {
        npm_v1(deps, "", &mut out);
    } else {
        return Err("neither \"packages\" nor \"dependencies\" is an object".to_owned());
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let text_of = |key: &str| lock.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(NpmLock {
        name: text_of("name"),
        version: text_of("version"),
        packages: out,
    })
}

fn npm_v1(
    deps: &serde_json::Map<String, serde_json::Value>,
    parent: &str,
    out: &mut Vec<NpmPackage>,
) {
    for (name, entry) in deps {
        let path = format!("{parent}node_modules/{name}");
        out.push(NpmPackage::of(path.clone(), name.clone(), entry));
        if let Some(nested) = entry.get("dependencies").and_then(|d| d.as_object()) {
            npm_v1(nested, &format!("{path}/"), out);
        }
    }
}

/// An npm lockfile, read by [`npm_lock`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpmLock {
    /// The app's name (the lockfile's `name`).
    pub name: Option<String>,
    /// The app's version.
    pub version: Option<String>,
    /// Its packages, sorted by install path.
    pub packages: Vec<NpmPackage>,
}

impl NpmPackage {
    /// The entry `entry` (its `version`, `integrity`, `dev`) installed at `path` as `name`.
    fn of(path: String, name: String, entry: &serde_json::Value) -> Self {
        let text_of = |key: &str| entry.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        Self {
            path,
            name,
            version: text_of("version").unwrap_or_default(),
            integrity: text_of("integrity"),
            dev: entry.get("dev").and_then(serde_json::Value::as_bool) == Some(true),
        }
    }
}

/// One entry of an npm lockfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpmPackage {
    /// Where npm installs it, relative to the app (`node_modules/pg`).
    pub path: String,
    /// Its name (`pg`, `@scope/name`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Subresource integrity (`sha512-<base64>`), when the lockfile has it.
    pub integrity: Option<String>,
    /// A development dependency.
    pub dev: bool,
}

/// The first line of a framed SBOM on a provisioner's output: `bake-sbom-begin SHA256 BYTES`
/// (of the JSON document).
pub const FRAME_BEGIN: &str = "bake-sbom-begin";
/// The prefix of each line of the gzipped document in base64 (76 characters per line).
pub const FRAME_LINE: &str = "bake-sbom:";
/// The last line.
pub const FRAME_END: &str = "bake-sbom-end";

/// Lowercase hex SHA-256 of `bytes`.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `json` framed for a provisioner's output, which is the only way out of an EC2 build instance
/// after its last provisioner (packer/scripts/cleanup.sh removes the SSH server, so no later step
/// can fetch a file): [`FRAME_BEGIN`] with the digest and size, the gzipped document in base64
/// lines after [`FRAME_LINE`], [`FRAME_END`]. [`Unframer`] reads it back from Packer's output.
#[must_use]
pub fn frame(json: &[u8]) -> String {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(json).expect("writing to a Vec cannot fail");
    let packed = gz.finish().expect("writing to a Vec cannot fail");
    let b64 = base64::engine::general_purpose::STANDARD.encode(packed);
    let mut out = format!("{FRAME_BEGIN} {} {}\n", sha256_hex(json), json.len());
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(FRAME_LINE);
        out.push(' ');
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(FRAME_END);
    out.push('\n');
    out
}

/// Reads a framed SBOM ([`frame`]) out of output lines, wherever each line's framing starts (Packer
/// prefixes a provisioner's lines with the source's name: `amazon-ebs.bake: bake-sbom: …`).
#[derive(Debug, Default)]
pub struct Unframer {
    header: Option<(String, usize)>,
    b64: String,
    done: Option<Result<Vec<u8>, String>>,
}

impl Unframer {
    /// Feeds one line; true when it was part of a frame (and so is no progress text).
    pub fn feed(&mut self, line: &str) -> bool {
        let Some(at) = line.find("bake-sbom") else {
            return false;
        };
        let text = line[at..].trim_end();
        if let Some(rest) = text.strip_prefix(FRAME_BEGIN) {
            let mut f = rest.split_whitespace();
            match (f.next(), f.next().and_then(|n| n.parse().ok())) {
                (Some(sum), Some(len)) => self.header = Some((sum.to_owned(), len)),
                _ => self.done = Some(Err(format!("malformed {FRAME_BEGIN} line: {text:?}"))),
            }
            self.b64.clear();
            return true;
        }
        if let Some(rest) = text.strip_prefix(FRAME_LINE) {
            if self.header.is_some() {
                self.b64.push_str(rest.trim());
            }
            return true;
        }
        if text == FRAME_END {
            if let Some((sum, len)) = self.header.take() {
                self.done = Some(Self::decode(&self.b64, &sum, len));
            }
            return true;
        }
        false
    }

    fn decode(b64: &str, sum: &str, len: usize) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        use std::io::Read as _;
        let packed = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("not base64: {e}"))?;
        let mut json = Vec::with_capacity(len);
        flate2::read::GzDecoder::new(packed.as_slice())
            .take(u64::try_from(len).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut json)
            .map_err(|e| format!("not gzip: {e}"))?;
        if json.len() != len {
            return Err(format!("{} bytes, the header says {len}", json.len()));
        }
        let got = sha256_hex(&json);
        if got != sum {
            return Err(format!("SHA-256 {got}, the header says {sum}"));
        }
        Ok(json)
    }

    /// The last complete document (or why it could not be read); `None` when no frame ended
    /// (a frame begun and not ended is an error).
    #[must_use]
    pub fn finish(self) -> Option<Result<Vec<u8>, String>> {
        if self.header.is_some() {
            return Some(Err(format!(
                "{FRAME_BEGIN} without {FRAME_END}: output cut short"
            )));
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bom(components: Vec<Component>) -> Bom {
        let os = Component::new("operating-system", "debian", "12");
        Bom::new("0", "2026-12-04T00:00:00Z", os.clone(), os, components)
    }

    fn deb(name: &str, version: &str) -> Component {
        Component::package(
            "library",
            "deb",
            Some("debian"),
            name,
            version,
            &[("arch", "amd64")],
        )
    }

    fn npm(name: &str, version: &str) -> Component {
        Component::package("library", "npm", None, name, version, &[])
    }

    #[test]
    fn test_purls_encode_versions_scopes_and_qualifiers() {
        assert_eq!(
            deb("libc6", "2.36-9+deb12u9").purl.unwrap(),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u9?arch=amd64"
        );
        assert_eq!(
            npm("@types/node", "20.1.0").purl.unwrap(),
            "pkg:npm/%40types/node@20.1.0"
        );
        assert_eq!(
            purl("deb", Some("debian"), "tzdata", "1:2024a-0+deb12u1", &[]),
            "pkg:deb/debian/tzdata@1%3A2024a-0%2Bdeb12u1"
        );
        assert_eq!(npm("pg", "8.23.1").ecosystem(), "npm");
        let mut odd = npm("x", "1");
        odd.purl = None;
        assert_eq!(odd.ecosystem(), "other");
    }

    #[test]
    fn test_versions_compare_as_their_ecosystem_does() {
        use Ordering::{Greater, Less};
        for (eco, a, b, want) in [
            // deb-version(7): epoch first, ~ sorts before anything, digits numerically.
            ("deb", "1:1.0", "2.0", Greater),
            ("deb", "3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("deb", "3.0.13-1~deb12u1", "3.0.11-1~deb12u2", Greater),
            ("deb", "1.10", "1.9", Greater),
            // SemVer: a pre-release is older than its release (dpkg would say newer).
            ("npm", "1.0.0-rc.1", "1.0.0", Less),
            ("cargo", "0.10.0", "0.9.9", Greater),
            // Not SemVer: dpkg's algorithm.
            ("npm", "1.2", "1.10", Less),
        ] {
            assert_eq!(compare_versions(eco, a, b), want, "{eco} {a} vs {b}");
        }
    }

    #[test]
    fn test_diff_names_added_removed_upgraded_downgraded() {
        let running = bom(vec![
            deb("openssl", "3.0.11-1~deb12u2"),
            deb("tzdata", "2024a-0+deb12u1"),
            deb("bash", "5.2.15-2+b7"),
            deb("gone", "1.0"),
            npm("pg", "8.23.1"),
            Component::package("library", "cargo", None, "windows-sys", "0.52.0", &[]),
            Component::package("library", "cargo", None, "windows-sys", "0.59.0", &[]),
        ]);
        let new = bom(vec![
            deb("openssl", "3.0.13-1~deb12u1"),
            deb("tzdata", "2023c-5"),
            deb("bash", "5.2.15-2+b7"),
            deb("libnew", "2.1"),
            npm("pg", "8.23.1"),
            Component::package("library", "cargo", None, "windows-sys", "0.59.0", &[]),
            Component::package("library", "cargo", None, "windows-sys", "0.60.2", &[]),
        ]);
        let d = diff(&running, &new);
        let openssl = Change {
            ecosystem: "deb".into(),
            name: "openssl".into(),
            from: "3.0.11-1~deb12u2".into(),
            to: "3.0.13-1~deb12u1".into(),
        };
        // One version of a crate replaced by another while a second stays: upgraded.
        let windows = Change {
            ecosystem: "cargo".into(),
            name: "windows-sys".into(),
            from: "0.52.0".into(),
            to: "0.60.2".into(),
        };
        assert_eq!(d.upgraded, vec![windows, openssl]);
        assert_eq!(d.downgraded.len(), 1);
        assert_eq!(d.downgraded[0].name, "tzdata");
        let names = |v: &[Package]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&d.added), vec!["libnew"]);
        assert_eq!(names(&d.removed), vec!["gone"]);
        assert_eq!(d.unchanged, 3); // bash, pg, windows-sys 0.59.0
        assert_eq!(
            d.summary(),
            "1 added, 1 removed, 2 upgraded, 1 downgraded (3 unchanged)"
        );
        assert_eq!(d.lines()[0], "+ deb libnew 2.1");
        assert!(d
            .lines()
            .contains(&"↑ deb openssl 3.0.11-1~deb12u2 → 3.0.13-1~deb12u1".to_owned()));
        assert!(diff(&running, &running).is_empty());
    }

    #[test]
    fn test_diff_of_a_crate_with_two_versions_on_a_side_is_added_and_removed() {
        let running = bom(vec![Component::package(
            "library",
            "cargo",
            None,
            "hashbrown",
            "0.14.5",
            &[],
        )]);
        let new = bom(vec![
            Component::package("library", "cargo", None, "hashbrown", "0.15.2", &[]),
            Component::package("library", "cargo", None, "hashbrown", "0.16.0", &[]),
        ]);
        let d = diff(&running, &new);
        assert!(d.upgraded.is_empty());
        assert_eq!(d.added.len(), 2);
        assert_eq!(d.removed.len(), 1);
    }

    #[test]
    fn test_dpkg_status_keeps_only_installed_packages() {
        let status = "Package: bash\nEssential: yes\nStatus: install ok installed\nPriority: required\nArchitecture: amd64\nVersion: 5.2.15-2+b7\nDescription: GNU Bourne Again SHell\n Bash is an sh-compatible command language interpreter.\n Version: 9.9 (a continuation line, not a field)\n\nPackage: openssh-server\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1:9.2p1-2+deb12u3\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\n";
        assert_eq!(
            dpkg_installed(status),
            vec![
                ("bash".into(), "5.2.15-2+b7".into(), "amd64".into()),
                ("tzdata".into(), "2024a-0+deb12u1".into(), "all".into()),
            ]
        );
    }

    #[test]
    fn test_npm_lockfiles_v3_and_v1() {
        let v3 = r#"{"name":"app","lockfileVersion":3,"packages":{
            "":{"name":"app","version":"1.0.0"},
            "node_modules/pg":{"version":"8.23.1","integrity":"sha512-AAA="},
            "node_modules/@scope/x":{"version":"1.0.0","dev":true},
            "node_modules/pg/node_modules/y":{"version":"2.0.0"},
            "packages/own":{"version":"0.0.1"},
            "node_modules/own":{"resolved":"packages/own","link":true}}}"#;
        let lock = npm_lock(v3).unwrap();
        assert_eq!(lock.name.as_deref(), Some("app"));
        let p = lock.packages;
        let names: Vec<(&str, &str, bool)> = p
            .iter()
            .map(|x| (x.path.as_str(), x.name.as_str(), x.dev))
            .collect();
        assert_eq!(
            names,
            vec![
                ("node_modules/@scope/x", "@scope/x", true),
                ("node_modules/pg", "pg", false),
                ("node_modules/pg/node_modules/y", "y", false),
                ("packages/own", "own", false),
            ]
        );
        assert_eq!(p[1].integrity.as_deref(), Some("sha512-AAA="));
        let v1 = r#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0","dev":true}}}}}"#;
        let p = npm_lock(v1).unwrap().packages;
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].path, "node_modules/a/node_modules/b");
        assert!(p[1].dev);
        assert!(npm_lock("{}").is_err());
        assert!(npm_lock("nope").is_err());
    }

    #[test]
    fn test_parse_refuses_what_is_not_cyclonedx() {
        let b = bom(vec![npm("pg", "8.23.1")]);
        let text = serde_json::to_vec(&b).unwrap();
        let back = Bom::parse(&text).unwrap();
        assert_eq!(back.components, b.components);
        assert_eq!(back.counts().get("npm"), Some(&1));
        assert!(matches!(
            Bom::parse(br#"{"bomFormat":"SPDX","specVersion":"2.3"}"#),
            Err(SbomError::NotCycloneDx(_))
        ));
        assert!(Bom::parse(b"[]").is_err());
    }

    #[test]
    fn test_frame_and_unframe_through_packer_prefixes() {
        let json = serde_json::to_vec(&bom(vec![npm("pg", "8.23.1"); 300])).unwrap();
        let framed = frame(&json);
        assert!(framed.lines().all(|l| l.len() <= 90), "{framed}");
        let mut u = Unframer::default();
        assert!(!u.feed("    amazon-ebs.bake: cleanup: openssh-server"));
        for line in framed.lines() {
            assert!(u.feed(&format!("    amazon-ebs.bake: {line}")));
        }
        assert_eq!(u.finish().unwrap().unwrap(), json);

        // A corrupted line, a cut-short frame, no frame.
        let mut bad = Unframer::default();
        for (i, line) in framed.lines().enumerate() {
            let mut line = line.to_owned();
            if i == 2 {
                // One base64 character of the document changed.
                let at = line.len() - 5;
                let c = if &line[at..=at] == "A" { "B" } else { "A" };
                line.replace_range(at..=at, c);
            }
            bad.feed(&line);
        }
        let err = bad.finish().unwrap().unwrap_err();
        assert!(
            err.contains("SHA-256") || err.contains("gzip") || err.contains("bytes"),
            "{err}"
        );
        let mut cut = Unframer::default();
        for line in framed.lines().take(3) {
            cut.feed(line);
        }
        assert!(cut.finish().unwrap().unwrap_err().contains("cut short"));
        assert!(Unframer::default().finish().is_none());
    }
}
