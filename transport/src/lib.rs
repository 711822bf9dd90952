//! The transport that carries the messages quorate's state machines emit:
//! length-prefixed multiplexed framing (Sans-IO), request/reply, push/pull,
//! publish/subscribe and dealer/router patterns over one connection per peer,
//! a seeded fault-injecting simulated network, and (feature `tokio`) TCP.
#![cfg_attr(docsrs, feature(doc_cfg))]
