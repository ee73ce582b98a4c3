/*
 * /init of rackhand's test OS (built by `cargo xtask test-os` with musl-gcc -static).
 *
 * Mounts /proc and /sys, prints one marker line to the console:
 *
 *   RACKHAND-TEST-OS booted serial=<DMI product serial> snapshot=<rackhand.snapshot= value>
 *
 * then powers the machine off. System tests look for the marker to prove that an installed
 * disk boots on its own. Values are reduced to printable, space-free ASCII.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reads up to cap-1 bytes of path into buf (NUL-terminated); "" on failure. */
static void slurp(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
}

/* Keeps printable non-space ASCII, up to the first whitespace; "unknown" if empty. */
static void clean(char *s)
{
    size_t start = 0, out = 0;
    while (s[start] == ' ' || s[start] == '\t' || s[start] == '\n')
        start++;
    for (size_t i = start; s[i] != '\0' && s[i] != ' ' && s[i] != '\n' && s[i] != '\t'; i++)
        if (s[i] > 0x20 && s[i] < 0x7f)
            s[out++] = s[i];
    s[out] = '\0';
    if (out == 0)
        strcpy(s, "unknown");
}

static void say(const char *s)
{
    (void)!write(1, s, strlen(s));
}

int main(void)
{
    static char cmdline[4096], serial[256], snapshot[256];
    mkdir("/proc", 0555);
    mkdir("/sys", 0555);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    int console = open("/dev/console", O_WRONLY);
    if (console >= 0 && console != 1)
        dup2(console, 1);

    slurp("/sys/class/dmi/id/product_serial", serial, sizeof serial);
    clean(serial);
    slurp("/proc/cmdline", cmdline, sizeof cmdline);
    snapshot[0] = '\0';
    const char *key = "rackhand.snapshot=";
    for (char *p = cmdline; (p = strstr(p, key)) != NULL; p++) {
        if (p == cmdline || p[-1] == ' ') {
            strncpy(snapshot, p + strlen(key), sizeof snapshot - 1);
            snapshot[sizeof snapshot - 1] = '\0';
            break;
        }
    }
    clean(snapshot);

    say("\nRACKHAND-TEST-OS booted serial=");
    say(serial);
    say(" snapshot=");
    say(snapshot);
    say("\n");
    sync();
    sleep(1);
    reboot(RB_POWER_OFF);
    /* PID 1 must not exit (that panics the kernel): idle if power-off failed. */
    for (;;)
        pause();
}
