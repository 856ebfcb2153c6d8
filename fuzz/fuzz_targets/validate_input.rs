//! Any bytes as the JSON body of any operation: parsing and model validation never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openivs::fuzzing::validate_input(data);
});
