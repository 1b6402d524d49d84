//! Splits the byte stream of a serial port into lines, with bounded memory.
//!
//! CR, LF and CRLF all end a line (devices disagree); empty lines are dropped, which also
//! swallows the second half of CRLF. A line longer than the limit is reported once, as soon as
//! it crosses the limit, and then discarded up to the next terminator, so a device spewing bytes
//! without newlines costs at most `max_line_bytes` of memory and one report per line.

/// One event produced by [`LineSplitter::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A complete, non-empty line without its terminator.
    Line(&'a [u8]),
    /// A line exceeded the limit; `bytes` were seen when it did. The rest of the line, up to
    /// the next terminator, is dropped silently.
    Overlong { bytes: usize },
}

/// Incremental line splitter; feed it whatever `read` returned.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    /// The start of a line whose terminator has not arrived yet; never above `max`.
    partial: Vec<u8>,
    /// Longest accepted line.
    max: usize,
    /// True while dropping the remainder of an over-long line.
    discarding: bool,
}

fn is_terminator(b: &u8) -> bool {
    *b == b'\n' || *b == b'\r'
}

impl LineSplitter {
    /// A splitter accepting lines of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        LineSplitter {
            partial: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Forgets any partial line, e.g. after the device was unplugged: its tail will not come.
    pub(crate) fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }

    /// Consumes `data`, calling `on_frame` for every line completed and every overlong line.
    pub(crate) fn push(&mut self, mut data: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        while !data.is_empty() {
            let Some(end) = data.iter().position(is_terminator) else {
                self.append(data, &mut on_frame);
                return;
            };
            let (chunk, rest) = (&data[..end], &data[end + 1..]);
            data = rest;
            if self.discarding {
                self.discarding = false;
            } else if self.partial.len() + chunk.len() > self.max {
                on_frame(Frame::Overlong {
                    bytes: self.partial.len() + chunk.len(),
                });
            } else if self.partial.is_empty() {
                // The common case: the whole line is in this read; hand it out without copying.
                if !chunk.is_empty() {
                    on_frame(Frame::Line(chunk));
                }
            } else {
                self.partial.extend_from_slice(chunk);
                on_frame(Frame::Line(&self.partial));
            }
            self.partial.clear();
        }
    }

    /// Keeps the start of a line whose terminator has not arrived.
    fn append(&mut self, data: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) {
        if self.discarding {
            return;
        }
        if self.partial.len() + data.len() > self.max {
            on_frame(Frame::Overlong {
                bytes: self.partial.len() + data.len(),
            });
            self.partial.clear();
            self.discarding = true;
        } else {
            self.partial.extend_from_slice(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lines as strings, overlong lines as `<N>`.
    fn split(splitter: &mut LineSplitter, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |frame| {
                out.push(match frame {
                    Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                    Frame::Overlong { bytes } => format!("<{bytes}>"),
                })
            });
        }
        out
    }

    #[test]
    fn cr_lf_and_crlf_all_end_lines() {
        let mut s = LineSplitter::new(100);
        assert_eq!(
            split(&mut s, &[b"a\nb\rc\r\nd\n\n\r\n"]),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn partial_lines_are_joined_across_reads() {
        let mut s = LineSplitter::new(100);
        assert_eq!(
            split(&mut s, &[b"tem", b"p=1", b"\r", b"\nhum=2\n"]),
            ["temp=1", "hum=2"]
        );
        assert_eq!(split(&mut s, &[b"x"]), Vec::<String>::new());
        s.reset();
        assert_eq!(split(&mut s, &[b"y\n"]), ["y"]);
    }

    #[test]
    fn overlong_lines_are_reported_once_and_skipped() {
        let mut s = LineSplitter::new(4);
        assert_eq!(
            split(&mut s, &[b"abcd\nabcde\nok\n"]),
            ["abcd", "<5>", "ok"]
        );
        // Crossing the limit without a terminator reports at once, then drops the rest.
        assert_eq!(
            split(&mut s, &[b"abc", b"defgh", b"ijkl", b"mn\nok2\n"]),
            ["<8>", "ok2"]
        );
        assert!(s.partial.capacity() <= 16);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(
            lines in proptest::collection::vec("[a-z]{0,12}", 0..20),
            terminators in proptest::collection::vec(prop_oneof![Just("\n"), Just("\r"), Just("\r\n")], 20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut stream = Vec::new();
            for (line, t) in lines.iter().zip(&terminators) {
                stream.extend_from_slice(line.as_bytes());
                stream.extend_from_slice(t.as_bytes());
            }
            let mut cut_at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            cut_at.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for c in cut_at {
                chunks.push(&stream[start..c]);
                start = c;
            }
            chunks.push(&stream[start..]);
            let got = split(&mut LineSplitter::new(8), &chunks);
            let want: Vec<String> = lines
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| if l.len() > 8 { format!("<{}>", 9) } else { l.clone() })
                .collect();
            // Overlong lines report the byte count seen when the limit was crossed, which
            // depends on chunking; compare only whether each line was kept or rejected.
            let norm = |v: Vec<String>| -> Vec<String> {
                v.into_iter().map(|s| if s.starts_with('<') { "<>".into() } else { s }).collect()
            };
            prop_assert_eq!(norm(got), norm(want));
        }

        #[test]
        fn memory_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut s = LineSplitter::new(32);
            s.push(&bytes, |_| {});
            prop_assert!(s.partial.len() <= 32);
        }
    }
}
