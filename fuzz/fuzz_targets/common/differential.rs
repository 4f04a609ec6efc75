//! Shared by the targets that run a parallel file reader beside its streaming reader.
use std::io::{Read, Seek, Write};

/// Writes `data` into a fresh input file and hands it, with an empty output file, to `file`
/// (the parallel reader); `streaming` reads the same bytes into a buffer. Both must refuse, or
/// both must give the same plaintext. (Their messages may differ when a file is both cut and
/// modified: the file readers check the length first.)
pub fn check<A: std::fmt::Debug, B: std::fmt::Debug>(
    data: &[u8],
    streaming: impl FnOnce(&mut Vec<u8>) -> Result<A, B>,
    file: impl FnOnce(&std::fs::File, &std::fs::File) -> Result<A, B>,
) {
    let dir = std::env::temp_dir();
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(format!("teeserve-fuzz-{}-{name}", std::process::id())))
            .expect("temp file")
    };
    let (mut input, mut output) = (open("in"), open("out"));
    input.write_all(data).unwrap();
    let mut streamed = Vec::new();
    match (streaming(&mut streamed), file(&input, &output)) {
        (Ok(_), Ok(_)) => {
            let mut plain = Vec::new();
            output.rewind().unwrap();
            output.read_to_end(&mut plain).unwrap();
            assert_eq!(plain, streamed);
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("streaming {a:?}, file {b:?}"),
    }
}
