//! The OAuth2 authorization server and OpenID provider, its tokens and the cryptography they
//! rest on.

pub mod crypto;
pub mod oauth;
pub mod tokens;
