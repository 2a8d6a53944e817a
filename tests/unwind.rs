//! The executables of this package link the unwinder in (`build.rs`): a panic must still
//! unwind to the `catch_unwind` that the command line puts around its stages.

#[test]
fn a_panic_unwinds_to_catch_unwind_through_the_linked_in_unwinder() {
    let dropped = std::cell::Cell::new(false);
    struct SetOnDrop<'a>(&'a std::cell::Cell<bool>);
    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = SetOnDrop(&dropped);
        let empty: Vec<u8> = Vec::new();
        std::hint::black_box(&empty)[std::hint::black_box(3)]
    }));
    assert!(caught.is_err());
    assert!(
        dropped.get(),
        "the frames between were unwound, their values dropped"
    );
}
