//! `mirrorctl` run as a process, in one test binary: the command line (`cli`), streaming,
//! check and repair at size (`integrity`), `check --source` and backfill (`source`),
//! `bench`, and the queue commands against moto
//! (`queues`). Run one part with `cargo test -p mirrorctl --test suite integrity::`.

mod bench;
mod cli;
mod integrity;
mod queues;
mod source;
