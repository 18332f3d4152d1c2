//! Context tokens come from clients: opening any string must fail cleanly or round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_core::ContextSigner;

fuzz_target!(|data: &[u8]| {
    let signer = ContextSigner::new(b"fuzz-secret", 5_000);
    if let Ok(token) = std::str::from_utf8(data) {
        if let Ok(ctx) = signer.open("tenant", b"key", token) {
            // Anything that opens must re-seal to a token that opens to the same context.
            let again = signer.seal("tenant", b"key", &ctx);
            assert_eq!(signer.open("tenant", b"key", &again).ok(), Some(ctx));
        }
    }
});
