/* A minimal test harness: each test is its own executable, registered with
 * meson. A failed check prints where and why and aborts (so sanitizers and
 * core dumps show the stack); exit code 77 tells meson the test was skipped. */
#ifndef FDN_TESTS_TEST_H
#define FDN_TESTS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fdn/error.h>

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define CHECK_EQ(a, b)                                                         \
    do {                                                                       \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);        \
        if (check_a_ != check_b_) {                                            \
            fprintf(stderr, "%s:%d: CHECK_EQ(%s, %s) failed: %lld != %lld\n",  \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);           \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* For calls returning 0/-errno: shows the errno text and fdn_errmsg(). */
#define CHECK_OK(call)                                                         \
    do {                                                                       \
        int check_rc_ = (call);                                                \
        if (check_rc_ < 0) {                                                   \
            fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, \
                    #call, fdn_strerror(check_rc_), fdn_errmsg());             \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define SKIP(...)                                                              \
    do {                                                                       \
        printf("SKIP: ");                                                      \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
        exit(77);                                                              \
    } while (0)

/* Runs one test function and says so, so a log shows how far a test got. */
#define RUN(fn)                                                                \
    do {                                                                       \
        printf("-- %s\n", #fn);                                                \
        fflush(stdout);                                                        \
        fn();                                                                  \
    } while (0)

#endif
