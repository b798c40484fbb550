//! Compile-fail cases of `lux_model!`: each file under `tests/ui` contains one kind of
//! mistake, and its `.stderr` pins the messages and where they point.

#[test]
fn macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
