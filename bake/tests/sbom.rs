//! Images' SBOMs: `bake build` stores the SBOM the image build printed (the real `bake-agent
//! sbom --frame` over a root file system the test makes, printed by the fixture template's
//! stand-in for cleanup.sh) in the emulator's S3 and tags the AMI; `bake release` prints what
//! differs from the running image's before the refresh, and says so when an SBOM was changed.

use std::path::Path;

use crate::util::World;

const BUCKET: &str = "bake-test-us-east-1-123456789012";

/// A root file system with a dpkg database, an os-release and an app with one npm package.
fn root(dir: &Path, debs: &[(&str, &str)], pg: &str) {
    std::fs::create_dir_all(dir.join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("opt/app/node_modules/pg")).unwrap();
    std::fs::write(dir.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    let status: String = debs
        .iter()
        .map(|(n, v)| {
            format!(
                "Package: {n}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n\n"
            )
        })
        .collect();
    std::fs::write(dir.join("var/lib/dpkg/status"), status).unwrap();
    std::fs::write(
        dir.join("opt/app/package-lock.json"),
        format!(
            r#"{{"name":"bake-example-app","version":"1.0.0","lockfileVersion":3,"packages":{{"":{{"name":"bake-example-app"}},"node_modules/pg":{{"version":"{pg}"}},"node_modules/left-pad":{{"version":"1.3.0","dev":true}}}}}}"#
        ),
    )
    .unwrap();
}

fn config(w: &World, root: &Path, sbom: bool) {
    // The agent binary of this test run (next to the `bake` under test).
    let agent = Path::new(env!("CARGO_BIN_EXE_bake")).with_file_name("bake-agent");
    let vars = format!(
        "sbom_command = \"{} sbom --root {} --frame\"\n",
        agent.display(),
        root.display()
    );
    let extra = if sbom {
        format!("[sbom]\nbucket = \"{BUCKET}\"\n")
    } else {
        String::new()
    };
    w.write_config_with(&vars, &extra);
}

fn object(w: &World, key: &str) -> Vec<u8> {
    w.rt.block_on(async {
        let out = w
            .aws
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    })
}

fn sha256(bytes: &[u8]) -> String {
    bake_common::sbom::sha256_hex(bytes)
}

#[test]
fn test_build_stores_the_sbom_and_release_prints_what_changed() {
    let w = World::new("sbom");
    w.rt.block_on(async {
        w.aws
            .s3
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
    });
    let (r1, r2) = (w.path("root-1"), w.path("root-2"));
    root(
        &r1,
        &[
            ("bash", "5.2.15-2+b7"),
            ("openssl", "3.0.11-1~deb12u2"),
            ("gone", "1.0"),
        ],
        "8.23.0",
    );
    root(
        &r2,
        &[
            ("bash", "5.2.15-2+b7"),
            ("openssl", "3.0.13-1~deb12u1"),
            ("libnew", "2.1"),
        ],
        "8.23.1",
    );

    // Without [sbom] the build says why nothing was stored.
    config(&w, &r1, false);
    let j = w.bake(&["build", "-o", "json"]).expect(0).json();
    assert!(j["sbom"].is_null(), "{j}");
    assert!(
        j["sbom_missing"]
            .as_str()
            .unwrap()
            .contains("no [sbom] bucket"),
        "{j}"
    );

    // With it: stored as sbom/<AMI>.cdx.json, tagged with its place and digest.
    config(&w, &r1, true);
    let j = w.bake(&["build", "--force", "-o", "json"]).expect(0).json();
    let v1 = j["image_id"].as_str().unwrap().to_owned();
    let url = format!("s3://{BUCKET}/sbom/{v1}.cdx.json");
    assert_eq!(j["sbom"]["url"], url.as_str(), "{j}");
    assert_eq!(j["sbom"]["components"]["deb"], 3, "{j}");
    // pg only: left-pad is a development dependency not installed in node_modules.
    assert_eq!(j["sbom"]["components"]["npm"], 1, "{j}");
    assert!(
        j["sbom"]["components"]["cargo"].as_u64().unwrap() > 50,
        "{j}"
    );
    let stored = object(&w, &format!("sbom/{v1}.cdx.json"));
    let tags = w.tags(&v1);
    assert_eq!(tags.get("bake:sbom"), Some(&url), "{tags:?}");
    assert_eq!(
        tags.get("bake:sbom-region").map(String::as_str),
        Some("us-east-1")
    );
    assert_eq!(tags.get("bake:sbom-sha256"), Some(&sha256(&stored)));
    assert_eq!(j["sbom"]["sha256"], sha256(&stored).as_str());
    let doc: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(doc["specVersion"], "1.5");
    let purls: Vec<&str> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    assert!(
        purls.contains(&"pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12"),
        "{purls:?}"
    );
    assert!(purls.contains(&"pkg:npm/pg@8.23.0"), "{purls:?}");
    assert!(
        purls.iter().any(|p| p.starts_with("pkg:cargo/tokio@")),
        "{purls:?}"
    );

    // Release v1, then v2: the difference before the refresh, in the JSON too.
    w.fleet(&v1, 1);
    w.bake(&["release", "--ami", &v1]).expect(0);
    config(&w, &r2, true);
    let r = w.bake(&["release", "-o", "json"]).expect(0);
    let j = r.json();
    let v2 = j["image_id"].as_str().unwrap().to_owned();
    let d = &j["sbom_diff"];
    assert_eq!(d["from"], v1.as_str(), "{j}");
    assert_eq!(d["to"], v2.as_str(), "{j}");
    let names = |k: &str| -> Vec<String> {
        d["diff"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p["ecosystem"].as_str().unwrap(),
                    p["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(names("added"), vec!["deb libnew"], "{d}");
    assert_eq!(names("removed"), vec!["deb gone"], "{d}");
    let upgraded = names("upgraded");
    assert!(upgraded.contains(&"deb openssl".to_owned()), "{d}");
    assert!(upgraded.contains(&"npm pg".to_owned()), "{d}");
    assert!(names("downgraded").is_empty(), "{d}");
    let summary = format!("SBOM {v1} → {v2}: 1 added, 1 removed,");
    let at = r
        .stderr
        .find(&summary)
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(
        r.stderr
            .contains("  ↑ deb openssl 3.0.11-1~deb12u2 → 3.0.13-1~deb12u1"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("  + deb libnew 2.1"), "{}", r.stderr);
    let started = r
        .stderr
        .find("instance refresh of")
        .expect("the refresh started");
    assert!(
        at < started,
        "the difference comes before the refresh: {}",
        r.stderr
    );

    // An SBOM changed after its build is not believed: said, and the release goes on.
    w.rt.block_on(async {
        w.aws
            .s3
            .put_object()
            .bucket(BUCKET)
            .key(format!("sbom/{v1}.cdx.json"))
            .body(
                b"{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.5\"}"
                    .to_vec()
                    .into(),
            )
            .send()
            .await
            .unwrap();
    });
    let r = w.bake(&["release", "--ami", &v1, "-o", "json"]).expect(0);
    let j = r.json();
    let why = j["sbom_diff"]["unavailable"].as_str().unwrap();
    assert!(
        why.contains(&format!("the SBOM of {v1}")) && why.contains("changed after the build"),
        "{why}"
    );
    assert!(j["sbom_diff"]["diff"].is_null(), "{j}");
    assert!(r.stderr.contains("no difference shown"), "{}", r.stderr);
}
