//! Board profiles (in progress).
