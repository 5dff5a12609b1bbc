"""Behind a corporate proxy with a private CA: one Session's settings serve API and storage."""

import asyncio
import os

import worldrouter_async as wr


async def main() -> None:
    # Usually nothing to pass: HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE are read when the
    # session opens. Explicit settings win over the environment.
    proxy = os.environ.get("CORP_PROXY")  # such as "http://user:secret@proxy.corp:3128"
    ca_bundle = os.environ.get("CORP_CA_BUNDLE")  # such as "/etc/corp/root-ca.pem"
    async with wr.Session(
        proxy=proxy,
        verify=ca_bundle or True,
        timeouts=wr.Timeouts(connect=5, request=30, download=120),
        limits=wr.Limits(max_response_bytes=2 * 1024 * 1024),
    ) as session:
        try:
            result = await session.generate("gpt-image-2", "a lighthouse at dusk")
        except wr.TLSVerificationError as exc:  # never retried: fix the trust instead
            print(f"untrusted certificate: {exc}")
            return
        except wr.ProxyError as exc:  # exc.status == 407: wrong proxy user or password
            print(f"proxy problem: {exc}")
            return
        print(await session.download(result, "images/"))


if __name__ == "__main__":
    asyncio.run(main())
