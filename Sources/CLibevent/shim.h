#ifndef GATEHOUSE_CLIBEVENT_H
#define GATEHOUSE_CLIBEVENT_H
// System headers first: event2/event-config.h defines _GNU_SOURCE, and glibc
// must not see that before <features.h>, or fd_set differs between modules.
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <event2/thread.h>
#endif
