#ifndef GATEHOUSE_CNGHTTP2_H
#define GATEHOUSE_CNGHTTP2_H
#include <sys/types.h>
#include <nghttp2/nghttp2.h>
#endif
