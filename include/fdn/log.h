/* Logging: what Foundation says about itself, one line per event.
 *
 * The library logs rarely and never on the data path: every connection
 * that ends (a lane lost, a session closed, expired or refused) is said in
 * one line with the node, the peer's address, the lane, the transport and
 * the reason in words (docs/RELIABILITY.md lists them). Abnormal ends are
 * FDN_LOG_WARN, orderly ones FDN_LOG_INFO.
 *
 * By default lines at FDN_LOG_WARN and above go to stderr, each as
 * "fdn: <line>\n" in one write. The environment variable FDN_LOG (error,
 * warn, info, debug or off) sets the level; it is read once, before the
 * first line is considered or the level is first set, and
 * fdn_log_set_level() overrides it. */
#ifndef FDN_LOG_H
#define FDN_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

/* Levels, most severe first: a line is emitted when its level is at most
 * the level set. FDN_LOG_OFF as the level set silences everything. */
#define FDN_LOG_OFF 0
#define FDN_LOG_ERROR 1
#define FDN_LOG_WARN 2
#define FDN_LOG_INFO 3
#define FDN_LOG_DEBUG 4

/* Receives one line: NUL-terminated, without prefix or newline, at most
 * 1023 bytes (longer lines are cut). It may be called from any thread of
 * the library (each worker logs from its own), concurrently, so it must be
 * thread-safe; it must not call back into Foundation. The line is valid
 * only during the call. */
typedef void (*fdn_log_fn)(int level, const char *line, void *arg);

/* Sends lines to fn (NULL: back to stderr). Any thread. A call already
 * under way on another thread may still reach the previous handler. */
void fdn_log_set_handler(fdn_log_fn fn, void *arg);

/* Sets the level (FDN_LOG_OFF .. FDN_LOG_DEBUG). Returns 0 or -EINVAL. */
int fdn_log_set_level(int level);

/* The level in force (FDN_LOG, or the last fdn_log_set_level()). */
int fdn_log_level(void);

#ifdef __cplusplus
}
#endif
#endif
