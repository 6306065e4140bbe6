/*
** check.h: the smallest test harness for netbe's C tests.
** CHECK records one assertion; RUN(test()) runs one test, which passes when
** none of its assertions failed. Assertions outside any RUN count together as
** one more test. check_summary prints "N passed, N failed (N checks)", the
** line scripts/run-tests reads: N counts tests, not assertions.
*/
#ifndef NETBE_CHECK_H
#define NETBE_CHECK_H

#include <stdio.h>

static int check_passed, check_failed;        /* assertions */
static int check_tests_passed, check_tests_failed;
static int check_in_run, check_loose, check_loose_failed;

#define CHECK(cond, ...) do {                                          \
        if (cond) {                                                    \
            check_passed++;                                            \
        } else {                                                       \
            check_failed++;                                            \
            check_loose_failed |= !check_in_run;                       \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            printf(__VA_ARGS__);                                       \
            printf("\n");                                              \
        }                                                              \
        check_loose |= !check_in_run;                                  \
    } while (0)

#define RUN(call) do {                                                 \
        int failed_before_ = check_failed;                             \
        check_in_run = 1;                                              \
        call;                                                          \
        check_in_run = 0;                                              \
        if (check_failed > failed_before_) {                           \
            check_tests_failed++;                                      \
            printf("FAILED TEST %s\n", #call);                         \
        } else {                                                       \
            check_tests_passed++;                                      \
        }                                                              \
    } while (0)

static int check_summary(void)
{
    if (check_loose)
        check_loose_failed ? check_tests_failed++ : check_tests_passed++;
    printf("%d passed, %d failed (%d checks)\n", check_tests_passed, check_tests_failed,
           check_passed + check_failed);
    return check_failed != 0;
}

#endif
