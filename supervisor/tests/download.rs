//! Upgrade auto-download against a real HTTP server on 127.0.0.1: formats,
//! checksums, policy, unsafe archives, limits, and that a failure leaves
//! nothing behind in `upgrades/`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use palisade_supervisor::upgrade::download::{
    ArtifactFormat, ChecksumPolicy, DownloadError, DownloadLimits, Downloader, os_arch,
};
use sha2::Digest;

const DAEMON: &str = "gaiad";
const BINARY: &[u8] = b"#!/bin/sh\necho upgraded gaiad\n";

/// A response the test server gives for one path.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// Without Content-Length the body is delimited by closing the
    /// connection, so the size cap must be enforced while streaming.
    content_length: bool,
}

/// Minimal HTTP/1.1 server: one thread per connection, `Connection: close`.
struct TestServer {
    base: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
}

impl TestServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let server_routes = Arc::clone(&routes);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let routes = Arc::clone(&server_routes);
                std::thread::spawn(move || serve(stream, &routes));
            }
        });
        TestServer { base, routes }
    }

    /// Serve `body` at `path`; returns the full URL.
    fn serve(&self, path: &str, body: &[u8]) -> String {
        self.reply(
            path,
            Reply {
                status: 200,
                body: body.to_vec(),
                content_length: true,
            },
        )
    }

    fn reply(&self, path: &str, reply: Reply) -> String {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
        format!("{}{path}", self.base)
    }
}

fn serve(stream: TcpStream, routes: &Mutex<HashMap<String, Reply>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let reply = routes.lock().unwrap().get(path).cloned().unwrap_or(Reply {
        status: 404,
        body: b"not found".to_vec(),
        content_length: true,
    });
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if reply.content_length {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn with_sha256(url: &str, bytes: &[u8]) -> String {
    format!("{url}?checksum=sha256:{}", sha256_hex(bytes))
}

fn plan_info(url: &str) -> String {
    serde_json::json!({ "binaries": { os_arch(): url } }).to_string()
}

enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

fn zip_fixture(entries: &[Entry]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for entry in entries {
        match entry {
            Entry::File(name, contents, mode) => {
                let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
                writer.start_file(*name, options).unwrap();
                writer.write_all(contents).unwrap();
            }
            Entry::Dir(name) => {
                writer
                    .add_directory(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
            }
            Entry::Symlink(name, target) => {
                writer
                    .add_symlink(*name, *target, zip::write::SimpleFileOptions::default())
                    .unwrap();
            }
        }
    }
    writer.finish().unwrap().into_inner()
}

/// Builds headers by hand so that unsafe names (which `tar::Builder`
/// refuses to write) can be tested too.
fn tar_gz_fixture(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        let (name, contents, mode, entry_type, link): (
            &str,
            &[u8],
            u32,
            tar::EntryType,
            Option<&str>,
        ) = match entry {
            Entry::File(name, contents, mode) => {
                (name, contents, *mode, tar::EntryType::Regular, None)
            }
            Entry::Dir(name) => (name, b"", 0o755, tar::EntryType::Directory, None),
            Entry::Symlink(name, target) => {
                (name, b"", 0o777, tar::EntryType::Symlink, Some(target))
            }
        };
        let raw_name = &mut header.as_old_mut().name;
        raw_name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_mode(mode);
        header.set_size(contents.len() as u64);
        header.set_entry_type(entry_type);
        header.set_cksum();
        builder.append(&header, contents).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

struct Fixture {
    _temp: tempfile::TempDir,
    upgrades: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let upgrades = temp.path().join("upgrades");
        std::fs::create_dir(&upgrades).unwrap();
        Fixture {
            _temp: temp,
            upgrades,
        }
    }

    async fn install(&self, info: &str, policy: ChecksumPolicy) -> Result<PathBuf, DownloadError> {
        self.install_with(DownloadLimits::default(), info, policy)
            .await
    }

    async fn install_with(
        &self,
        limits: DownloadLimits,
        info: &str,
        policy: ChecksumPolicy,
    ) -> Result<PathBuf, DownloadError> {
        let downloader = Downloader::new(limits).unwrap();
        let report = downloader
            .install_upgrade(info, &self.upgrades, "v2", DAEMON, policy)
            .await?;
        assert_eq!(report.binary_path, self.upgrades.join("v2/bin/gaiad"));
        Ok(report.binary_path)
    }

    /// After a failure: no upgrade dir and no staging leftovers.
    fn assert_nothing_installed(&self) {
        let leftovers: Vec<_> = std::fs::read_dir(&self.upgrades)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            leftovers.is_empty(),
            "upgrades/ should be empty, has {leftovers:?}"
        );
    }
}

fn assert_installed_executable(binary: &Path, contents: &[u8]) {
    assert_eq!(std::fs::read(binary).unwrap(), contents);
    let mode = std::fs::metadata(binary).unwrap().permissions().mode();
    assert_ne!(mode & 0o111, 0, "binary mode {mode:o} is not executable");
    let output = std::process::Command::new(binary).output().unwrap();
    assert_eq!(output.stdout, b"upgraded gaiad\n");
}

async fn expect_error(
    fixture: &Fixture,
    info: &str,
    policy: ChecksumPolicy,
    fragment: &str,
) -> DownloadError {
    let error = fixture
        .install(info, policy)
        .await
        .expect_err("install should fail");
    assert!(
        error.to_string().contains(fragment),
        "error {error:?} / {error} lacks {fragment:?}"
    );
    fixture.assert_nothing_installed();
    error
}

#[tokio::test]
async fn raw_binary_with_sha256_is_installed_executable() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let url = with_sha256(&server.serve("/gaiad", BINARY), BINARY);
    let downloader = Downloader::new(DownloadLimits::default()).unwrap();
    let report = downloader
        .install_upgrade(
            &plan_info(&url),
            &fixture.upgrades,
            "v2",
            DAEMON,
            ChecksumPolicy::Required,
        )
        .await
        .unwrap();
    assert_eq!(report.format, ArtifactFormat::Raw);
    assert_eq!(report.bytes, BINARY.len() as u64);
    assert_eq!(report.checksum.as_ref().unwrap().hex(), sha256_hex(BINARY));
    assert_eq!(
        report.url,
        format!(
            "{}/gaiad?checksum=sha256:{}",
            server.base,
            sha256_hex(BINARY)
        )
    );
    assert_installed_executable(&report.binary_path, BINARY);
    let names: Vec<_> = std::fs::read_dir(&fixture.upgrades)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["v2"], "only the upgrade dir remains");
}

#[tokio::test]
async fn zip_with_bin_dir_is_installed() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let archive = zip_fixture(&[
        Entry::Dir("bin/"),
        Entry::File("bin/gaiad", BINARY, 0o755),
        Entry::File("lib/libwasmvm.so", b"lib", 0o644),
        Entry::Symlink("lib/libwasmvm.x86_64.so", "libwasmvm.so"),
    ]);
    let url = with_sha256(&server.serve("/gaia.zip", &archive), &archive);
    let binary = fixture
        .install(&plan_info(&url), ChecksumPolicy::Required)
        .await
        .unwrap();
    assert_installed_executable(&binary, BINARY);
    let link = fixture.upgrades.join("v2/lib/libwasmvm.x86_64.so");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("libwasmvm.so")
    );
}

#[tokio::test]
async fn tar_gz_with_binary_at_root_goes_into_bin() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let archive = tar_gz_fixture(&[
        Entry::File("./gaiad", BINARY, 0o755),
        Entry::File("README", b"x", 0o644),
    ]);
    let url = with_sha256(&server.serve("/gaia.tar.gz", &archive), &archive);
    let binary = fixture
        .install(&plan_info(&url), ChecksumPolicy::Required)
        .await
        .unwrap();
    assert_installed_executable(&binary, BINARY);
    assert!(fixture.upgrades.join("v2/README").is_file());
}

#[tokio::test]
async fn sha512_checksum_is_verified() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let archive = tar_gz_fixture(&[Entry::File("bin/gaiad", BINARY, 0o750)]);
    let url = format!(
        "{}?checksum=sha512:{}",
        server.serve("/gaia.tgz", &archive),
        hex::encode(sha2::Sha512::digest(&archive))
    );
    let binary = fixture
        .install(&plan_info(&url), ChecksumPolicy::Required)
        .await
        .unwrap();
    assert_installed_executable(&binary, BINARY);
}

#[tokio::test]
async fn checksum_mismatch_installs_nothing() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let url = with_sha256(&server.serve("/gaiad", BINARY), b"some other binary");
    let error = expect_error(
        &fixture,
        &plan_info(&url),
        ChecksumPolicy::Required,
        "checksum mismatch",
    )
    .await;
    let message = error.to_string();
    assert!(
        message.contains(&sha256_hex(b"some other binary")),
        "{message}"
    );
    assert!(message.contains(&sha256_hex(BINARY)), "{message}");
}

#[tokio::test]
async fn missing_checksum_is_refused_when_required_and_allowed_when_optional() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let url = server.serve("/gaiad", BINARY);
    expect_error(
        &fixture,
        &plan_info(&url),
        ChecksumPolicy::Required,
        "has no ?checksum=",
    )
    .await;
    let binary = fixture
        .install(&plan_info(&url), ChecksumPolicy::Optional)
        .await
        .unwrap();
    assert_installed_executable(&binary, BINARY);
}

#[tokio::test]
async fn md5_checksum_is_refused_even_when_optional() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let url = format!(
        "{}?checksum=md5:d41d8cd98f00b204e9800998ecf8427e",
        server.serve("/gaiad", BINARY)
    );
    expect_error(&fixture, &plan_info(&url), ChecksumPolicy::Optional, "md5").await;
}

#[tokio::test]
async fn non_executable_binary_in_archive_is_refused() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    for (path, archive) in [
        (
            "/a.zip",
            zip_fixture(&[Entry::File("bin/gaiad", BINARY, 0o644)]),
        ),
        (
            "/a.tar.gz",
            tar_gz_fixture(&[Entry::File("bin/gaiad", BINARY, 0o644)]),
        ),
    ] {
        let url = with_sha256(&server.serve(path, &archive), &archive);
        expect_error(
            &fixture,
            &plan_info(&url),
            ChecksumPolicy::Required,
            "archive contains bin/gaiad but it is not executable (mode 0644)",
        )
        .await;
    }
}

#[tokio::test]
async fn archive_without_the_binary_is_refused() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let archive = zip_fixture(&[Entry::File("gaia-v2/bin/gaiad", BINARY, 0o755)]);
    let url = with_sha256(&server.serve("/a.zip", &archive), &archive);
    expect_error(
        &fixture,
        &plan_info(&url),
        ChecksumPolicy::Required,
        "archive contains neither bin/gaiad nor gaiad at its root (top-level entries: gaia-v2)",
    )
    .await;
}

#[tokio::test]
async fn binary_that_is_a_symlink_is_refused() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let archive = tar_gz_fixture(&[
        Entry::File("bin/gaiad-v2", BINARY, 0o755),
        Entry::Symlink("bin/gaiad", "gaiad-v2"),
    ]);
    let url = with_sha256(&server.serve("/a.tgz", &archive), &archive);
    expect_error(
        &fixture,
        &plan_info(&url),
        ChecksumPolicy::Required,
        "it is a symlink, not a regular file",
    )
    .await;
}

#[tokio::test]
async fn unsafe_archive_entries_are_refused() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let good = Entry::File("bin/gaiad", BINARY, 0o755);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/t1.tgz",
            tar_gz_fixture(&[Entry::File("../../evil", b"x", 0o755), good]),
            "contains a '..' component",
        ),
        (
            "/t2.tgz",
            tar_gz_fixture(&[Entry::File("/tmp/evil", b"x", 0o755)]),
            "is an absolute path",
        ),
        (
            "/t3.tgz",
            tar_gz_fixture(&[Entry::Symlink("bin/x", "/etc/passwd")]),
            "symlink to the absolute path",
        ),
        (
            "/t4.tgz",
            tar_gz_fixture(&[Entry::Symlink("bin/x", "../../etc")]),
            "contains '..'",
        ),
        (
            "/z1.zip",
            zip_fixture(&[Entry::File("../evil", b"x", 0o755)]),
            "contains a '..' component",
        ),
        (
            "/z2.zip",
            zip_fixture(&[Entry::Symlink("bin", "/usr/bin")]),
            "symlink to the absolute path",
        ),
    ];
    for (path, archive, fragment) in cases {
        let url = with_sha256(&server.serve(path, &archive), &archive);
        let error = expect_error(
            &fixture,
            &plan_info(&url),
            ChecksumPolicy::Required,
            fragment,
        )
        .await;
        assert!(
            matches!(error, DownloadError::UnsafeArchiveEntry { .. }),
            "{path}: {error:?}"
        );
    }
    assert!(!fixture.upgrades.parent().unwrap().join("evil").exists());
}

#[tokio::test]
async fn device_file_in_tar_is_refused() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_ustar();
    header.set_path("bin/null").unwrap();
    header.set_entry_type(tar::EntryType::Char);
    header.set_size(0);
    header.set_mode(0o666);
    header.set_cksum();
    builder.append(&header, &b""[..]).unwrap();
    let archive = builder.into_inner().unwrap().finish().unwrap();
    let url = with_sha256(&server.serve("/dev.tgz", &archive), &archive);
    expect_error(
        &fixture,
        &plan_info(&url),
        ChecksumPolicy::Required,
        "is a device file",
    )
    .await;
}

#[tokio::test]
async fn info_url_to_json_file_with_checksum_works() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let binary_url = with_sha256(&server.serve("/gaiad", BINARY), BINARY);
    let info_json = plan_info(&binary_url);
    let info_url = with_sha256(
        &server.serve("/info.json", info_json.as_bytes()),
        info_json.as_bytes(),
    );
    let binary = fixture
        .install(&info_url, ChecksumPolicy::Required)
        .await
        .unwrap();
    assert_installed_executable(&binary, BINARY);
}

#[tokio::test]
async fn info_url_with_wrong_checksum_is_refused() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let binary_url = with_sha256(&server.serve("/gaiad", BINARY), BINARY);
    let info_url = with_sha256(
        &server.serve("/info.json", plan_info(&binary_url).as_bytes()),
        b"other",
    );
    expect_error(
        &fixture,
        &info_url,
        ChecksumPolicy::Required,
        "checksum mismatch",
    )
    .await;
    let bare_info_url = server.serve("/info.json", plan_info(&binary_url).as_bytes());
    expect_error(
        &fixture,
        &bare_info_url,
        ChecksumPolicy::Required,
        "has no ?checksum=",
    )
    .await;
}

#[tokio::test]
async fn any_key_is_used_when_platform_is_missing() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let url = with_sha256(&server.serve("/gaiad", BINARY), BINARY);
    let info =
        serde_json::json!({ "binaries": { "plan9/mips": "https://e.invalid/x", "any": url } })
            .to_string();
    let binary = fixture
        .install(&info, ChecksumPolicy::Required)
        .await
        .unwrap();
    assert_installed_executable(&binary, BINARY);

    let fixture = Fixture::new();
    let info = serde_json::json!({ "binaries": { "plan9/mips": url } }).to_string();
    expect_error(
        &fixture,
        &info,
        ChecksumPolicy::Required,
        "keys present: plan9/mips",
    )
    .await;
}

#[tokio::test]
async fn existing_upgrade_dir_is_refused_and_untouched() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let existing = fixture.upgrades.join("v2");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("marker"), b"keep").unwrap();
    let url = with_sha256(&server.serve("/gaiad", BINARY), BINARY);
    let error = fixture
        .install(&plan_info(&url), ChecksumPolicy::Required)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DownloadError::UpgradeDirExists { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("already exists"), "{error}");
    let names: Vec<_> = std::fs::read_dir(&existing)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["marker"]);
    assert_eq!(std::fs::read(existing.join("marker")).unwrap(), b"keep");
    let entries: Vec<_> = std::fs::read_dir(&fixture.upgrades)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["v2"], "no staging leftovers");
}

#[tokio::test]
async fn http_404_is_a_clear_error() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let url = with_sha256(&format!("{}/missing", server.base), BINARY);
    let error = expect_error(
        &fixture,
        &plan_info(&url),
        ChecksumPolicy::Required,
        "answered HTTP 404",
    )
    .await;
    assert!(error.to_string().contains("/missing"), "{error}");
}

#[tokio::test]
async fn oversize_artifact_is_refused_with_and_without_content_length() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let big = vec![0x7fu8; 64 * 1024];
    let limits = DownloadLimits {
        max_artifact_bytes: 10_000,
        ..DownloadLimits::default()
    };
    for content_length in [true, false] {
        let path = format!("/big-{content_length}");
        let url = server.reply(
            &path,
            Reply {
                status: 200,
                body: big.clone(),
                content_length,
            },
        );
        let info = plan_info(&with_sha256(&url, &big));
        let error = fixture
            .install_with(limits.clone(), &info, ChecksumPolicy::Required)
            .await
            .unwrap_err();
        assert!(
            matches!(error, DownloadError::TooLarge { limit: 10_000, .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("larger than the 10000-byte limit"),
            "{error}"
        );
        fixture.assert_nothing_installed();
    }
}

#[tokio::test]
async fn zip_bomb_is_stopped_by_the_unpacked_size_cap() {
    let server = TestServer::start();
    let fixture = Fixture::new();
    let zeros = vec![0u8; 1 << 20];
    let archive = zip_fixture(&[
        Entry::File("bin/gaiad", BINARY, 0o755),
        Entry::File("bin/zeros", &zeros, 0o644),
    ]);
    let url = with_sha256(&server.serve("/bomb.zip", &archive), &archive);
    let limits = DownloadLimits {
        max_unpacked_bytes: 100_000,
        ..DownloadLimits::default()
    };
    let error = fixture
        .install_with(limits, &plan_info(&url), ChecksumPolicy::Required)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("archive exceeds the limit of 100000 unpacked bytes"),
        "{error}"
    );
    fixture.assert_nothing_installed();
}

#[tokio::test]
async fn stalled_server_hits_the_idle_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buffer = [0u8; 1024];
        let _ = std::io::Read::read(&mut stream, &mut buffer);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
        std::thread::sleep(std::time::Duration::from_secs(5));
    });
    let fixture = Fixture::new();
    let url = with_sha256(&format!("http://{address}/gaiad"), BINARY);
    let limits = DownloadLimits {
        idle_timeout: std::time::Duration::from_millis(300),
        ..DownloadLimits::default()
    };
    let error = fixture
        .install_with(limits, &plan_info(&url), ChecksumPolicy::Required)
        .await
        .unwrap_err();
    assert!(matches!(error, DownloadError::Timeout { .. }), "{error:?}");
    fixture.assert_nothing_installed();
}
