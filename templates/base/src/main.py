#!/usr/bin/env python3
def main() -> None:
    print("hello")


if __name__ == "__main__":
    main()
