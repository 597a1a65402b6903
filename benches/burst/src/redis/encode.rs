//! The client's side of RESP2: a command is an array of bulk strings, written sans-IO
//! into an output buffer. Numbers are written without the `fmt` machinery, since
//! `PUBLISH` is on the per-message path.

use crate::client::scan::push_u64;

/// Writes the command `args` (`[b"PUBLISH", channel, body]`) as a RESP array.
pub fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_u64(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_u64(out, arg.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::reader::{Frame, Reader, Value};

    #[test]
    fn writes_commands_a_server_reads_back() {
        let mut out = Vec::new();
        write_command(&mut out, &[b"PUBLISH", b"fanout", b"a\r\nb"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nfanout\r\n$4\r\na\r\nb\r\n"
        );
        write_command(&mut out, &[b"PING"]);
        let mut reader = Reader::new();
        reader.push(&out);
        let Some(Frame::Value(Value::Array(Some(publish)))) = reader.next_frame().unwrap() else {
            panic!("an array")
        };
        let args: Vec<Value<'_>> = publish.iter().collect();
        assert_eq!(
            args,
            [
                Value::Bulk(Some(b"PUBLISH")),
                Value::Bulk(Some(b"fanout")),
                Value::Bulk(Some(b"a\r\nb"))
            ]
        );
        assert!(matches!(
            reader.next_frame().unwrap(),
            Some(Frame::Value(Value::Array(Some(a)))) if a.len() == 1
        ));
    }
}
