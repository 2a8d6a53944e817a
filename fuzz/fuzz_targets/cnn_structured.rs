#![no_main]

libfuzzer_sys::fuzz_target!(|spec: cnnc_fuzz::NetworkSpec| {
    cnnc_fuzz::cnn_structured(&spec);
});
