//! `outpost demo --exit`, the README's one command, through the real binary: it forms a
//! cluster, imports a signed bundle, enrolls an agent and installs the deployment.

mod support;

use support::{exe, serial};

use std::time::{Duration, Instant};

#[test]
fn the_demo_runs_end_to_end() {
    let _g = serial();
    let mut child = std::process::Command::new(exe())
        .args(["demo", "--exit"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the demo");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match child.try_wait().expect("wait for the demo") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                panic!("the demo did not finish within 180 s");
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let out = child.wait_with_output().expect("demo output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "formed: 3 voters",
        "on 3/3",
        "installed (handler exit 0)",
        "Stopping the demo cluster.",
    ] {
        assert!(
            stdout.contains(want),
            "demo output lacks {want:?}:\n{stdout}"
        );
    }
}
