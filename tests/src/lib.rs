pub mod apiserver;
pub mod cli;
