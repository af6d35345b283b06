//! The binding generator, pinned to the uniffi version of the scaffolding:
//! `cargo run -p bp-ffi --features bindgen --bin uniffi-bindgen -- generate --library
//! target/debug/libbp_ffi.so -l kotlin -l swift -l python -o OUT`.
#![forbid(unsafe_code)]

fn main() {
    uniffi::uniffi_bindgen_main()
}
