/* upper: copies standard input to standard output in upper case.
 *
 * Given the argument --fail it instead writes a message to stderr and
 * exits with status 3, so tests can see a command fail.
 *
 * Built into the committed upper.wasm (a WASI preview 1 command) by
 * ./build-c.sh; see README.md in this directory.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fail") == 0) {
            fprintf(stderr, "%s: failing as asked (--fail)\n", argv[0]);
            return 3;
        }
    }
    int c;
    while ((c = getchar()) != EOF) {
        putchar(toupper(c));
    }
    return 0;
}
