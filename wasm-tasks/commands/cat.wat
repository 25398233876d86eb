;; cat.wat: a WASI preview 1 command written by hand, for tests.
;;
;; Copies standard input to standard output, then exits with the number of
;; its arguments as status (so with no arguments it succeeds), saying so on
;; stderr when that is not zero.
;;
;; The committed cat.wasm is this file in binary form:
;;   wasm-tools parse cat.wat -o cat.wasm
;; (or any WAT assembler, e.g. the `wat` crate's `wat::parse_file`).
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  ;; 0: an iovec {buf, len}; 8: bytes read or written; 16: argc;
  ;; 20: size of the argv strings; 64: the message; 1024: the buffer.
  (memory (export "memory") 1)
  (data (i32.const 64) "cat.wat: exiting with the number of its arguments\n")

  ;; Writes n bytes at buf to fd, however many calls that takes.
  (func $write_all (param $fd i32) (param $buf i32) (param $n i32)
    (local $off i32)
    (loop $more
      (i32.store (i32.const 0) (i32.add (local.get $buf) (local.get $off)))
      (i32.store (i32.const 4) (i32.sub (local.get $n) (local.get $off)))
      (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 1))))
      (local.set $off (i32.add (local.get $off) (i32.load (i32.const 8))))
      (br_if $more (i32.lt_u (local.get $off) (local.get $n)))))

  (func (export "_start")
    (local $n i32)
    (local $status i32)
    (block $eof
      (loop $copy
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 4096))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (call $write_all (i32.const 1) (i32.const 1024) (local.get $n))
        (br $copy)))
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (local.set $status (i32.sub (i32.load (i32.const 16)) (i32.const 1)))
    (if (local.get $status)
      (then (call $write_all (i32.const 2) (i32.const 64) (i32.const 50))))
    (call $proc_exit (local.get $status))))
