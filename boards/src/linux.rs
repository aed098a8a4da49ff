//! Linux buses (in progress).
