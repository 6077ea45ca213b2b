/* Command-line helpers shared by the tools. */
#ifndef FDN_TOOLS_CLI_H
#define FDN_TOOLS_CLI_H

#include <stdbool.h>
#include <stdint.h>

/* Parses a decimal integer in [min, max]: the whole string, no sign. */
bool cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out);

#endif
