//! Attestation-level attacks: evidence the attestation service refuses.

use super::*;

pub async fn run(c: &Ctx, m: &mut Matrix) {
    let Ctx {
        env,
        runtime,
        logs,
        stranger,
        ..
    } = c;
    let mut debug_guest = identity(GOOD_CONFIG);
    debug_guest.policy = conclave_snp::report::GuestPolicy(0x3_0000 | (1 << 19));
    attest_refusal(
        m,
        "debug-enabled guest policy",
        env,
        logs,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(&evidence(&env.sim, &debug_guest, runtime), runtime, None),
        "debug policy bit",
    )
    .await;
    attest_refusal(
        m,
        "report_data not bound to the runtime data",
        env,
        logs,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(
            &evidence(&env.sim, &identity(GOOD_CONFIG), b"other runtime data"),
            runtime,
            None,
        ),
        "report_data does not bind the runtime data",
    )
    .await;
    attest_refusal(
        m,
        "evidence under an untrusted root",
        env,
        logs,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(
            &evidence(stranger, &identity(GOOD_CONFIG), runtime),
            runtime,
            None,
        ),
        "is not one of the trusted roots",
    )
    .await;
    // The trusted ARK in the evidence, but the stranger's ASK and VCEK under it.
    let pems = |sim: &SimHost| {
        conclave_pki::Cert::parse_pem_bundle("chain", sim.platform().cert_chain_pem().as_bytes())
            .unwrap()
    };
    let mut grafted_chain: Vec<_> = pems(&env.sim)
        .into_iter()
        .filter(|c| c.subject().contains("ARK"))
        .collect();
    grafted_chain.extend(
        pems(stranger)
            .into_iter()
            .filter(|c| !c.subject().contains("ARK")),
    );
    let mut grafted = evidence(stranger, &identity(GOOD_CONFIG), runtime);
    grafted.cert_chain_pem = grafted_chain.iter().map(|c| c.to_pem()).collect();
    attest_refusal(
        m,
        "VCEK not chained to the trusted ARK (grafted chain)",
        env,
        logs,
        &env.attest_url,
        &AttestSevSnpVmRequest::new(&grafted, runtime, None),
        "signature",
    )
    .await;
    let mut strict = sim_policy();
    strict.min_tcb = Some(conclave_snp::report::TcbParts {
        fmc: None,
        bootloader: 255,
        tee: 255,
        snp: 255,
        microcode: 255,
    });
    let (strict_url, _stop_strict) =
        attestation_service_with(&env.dir.join("strict-attest"), &env.ca, &env.sim, strict).await;
    attest_refusal(
        m,
        "reported TCB below the policy minimum",
        env,
        logs,
        &strict_url,
        &AttestSevSnpVmRequest::new(
            &evidence(&env.sim, &identity(GOOD_CONFIG), runtime),
            runtime,
            None,
        ),
        "is below the minimum",
    )
    .await;
}
