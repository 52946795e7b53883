// HDLFAST_CLONES: compile a hot function for AVX-512, AVX2 and baseline x86-64, picked at
// load time (GCC function multiversioning), so wheels stay portable and still vectorise wide.
#pragma once

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && defined(__linux__)
#define HDLFAST_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HDLFAST_CLONES
#endif
