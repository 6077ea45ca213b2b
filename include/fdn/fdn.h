/* Foundation: the whole public API. */
#ifndef FDN_FDN_H
#define FDN_FDN_H

#include <fdn/error.h>
#include <fdn/log.h>
#include <fdn/version.h>
#include <fdn/topology.h>
#include <fdn/msg.h>
#include <fdn/worker.h>
#include <fdn/runtime.h>
#include <fdn/histogram.h>
#include <fdn/node.h>

#endif
