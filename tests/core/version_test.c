/* Version and capability queries. */
#include <sched.h>
#include <string.h>

#include <fdn/fdn.h>

#include "test.h"

static void test_version_matches_header(void)
{
    CHECK(strcmp(fdn_version(), FDN_VERSION_STRING) == 0);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", FDN_VERSION_MAJOR, FDN_VERSION_MINOR,
             FDN_VERSION_PATCH);
    CHECK(strcmp(fdn_version(), expected) == 0);
}

/* The probe agrees with what the process can see for itself. */
static void test_capabilities_describe_this_host(void)
{
    fdn_capabilities caps;
    CHECK_OK(fdn_capabilities_probe(&caps));
    cpu_set_t set;
    CHECK_OK(sched_getaffinity(0, sizeof set, &set));
    CHECK_EQ(caps.cpus_allowed, CPU_COUNT(&set));
    CHECK(caps.numa_nodes >= 1);
    /* Opcodes are only probed on a ring that exists. */
    if (!caps.io_uring)
        CHECK(!caps.io_uring_msg_ring && !caps.io_uring_send_zc);
    printf("io_uring=%d msg_ring=%d send_zc=%d numa_nodes=%d cpus=%d\n", caps.io_uring,
           caps.io_uring_msg_ring, caps.io_uring_send_zc, caps.numa_nodes, caps.cpus_allowed);
}

int main(void)
{
    RUN(test_version_matches_header);
    RUN(test_capabilities_describe_this_host);
    return 0;
}
