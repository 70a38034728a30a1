"""A few dozen realistic English and Chinese customer mails for `mailcare demo`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

SUPPORT = "support@acme.example"
SALES = "sales@acme.example"
START = datetime(2026, 11, 16, 8, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Sample:
    """One demo message and how it reaches mailcare."""

    key: str
    raw: bytes
    via: str  # "imap" or "lmtp"
    recipients: tuple[str, ...] = (SUPPORT,)


# (key, sender name, sender address, subject, body, charset)
EN = [
    (
        "en-invoice",
        "Mary Johnson",
        "mary.johnson@globex.example",
        "Charged twice for invoice INV-20931",
        "Hello,\n\nmy credit card was charged twice for invoice INV-20931 (EUR 149.00 each) on "
        "14 November. Please refund the duplicate payment.\n\nThanks,\nMary Johnson\nGlobex Corp",
    ),
    (
        "en-login",
        "Lukas Schmidt",
        "lukas.schmidt@initech.example",
        "Cannot log in after password reset",
        'Hi team,\n\nsince yesterday\'s password reset I get "Invalid session" on the web dashboard. '
        "The log file C:\\Users\\lschmidt\\AppData\\Local\\Acme\\sync.log shows error E-4012.\n\n"
        "Regards,\nLukas",
    ),
    (
        "en-return",
        "Chloe Dubois",
        "chloe.dubois@northwind.example",
        "Return request for order #4668136",
        "Good morning,\n\nthe router X200 from order #4668136 arrived with a cracked case. I would "
        "like to return it and get a replacement.\n\nBest regards,\nChloe Dubois",
    ),
    (
        "en-quote",
        "Rahul Sharma",
        "rahul.sharma@contoso.example",
        "Quote for 250 Business plan seats",
        "Hello sales team,\n\nwe are evaluating CloudSync Pro for 250 users. Could you send a quote "
        "for the Business plan with annual billing, and tell us about volume discounts?\n\n"
        "Kind regards,\nRahul Sharma\nIT Procurement, Contoso Ltd",
    ),
    (
        "en-outage",
        "Olga Novak",
        "olga.novak@fabrikam.example",
        "URGENT: sync service down for all users",
        "Hi,\n\nnone of our 80 users can sync since 07:40 CET. This blocks our month-end closing. "
        "Please call me on +49 30 1234567 as soon as possible.\n\nOlga Novak\nFabrikam Inc.",
    ),
    (
        "en-suggest",
        "Noah Wilson",
        "noah.wilson@tailspin.example",
        "Suggestion: dark mode for the desktop client",
        "Hi there,\n\nsmall suggestion: a dark mode for the desktop client would be great for those "
        "of us working late. Keep up the good work!\n\nNoah",
    ),
    (
        "en-complaint",
        "Sarah Thompson",
        "sarah.thompson@umbrella-retail.example",
        "Third time asking - still no answer about my refund",
        "To whom it may concern,\n\nthis is the third time I write about the refund for order "
        "#5520117. Nobody has answered in two weeks. I am very disappointed.\n\nSarah Thompson",
    ),
    (
        "en-address",
        "José Peña",
        "jose.pena@example.com",
        "Change of delivery address",
        "Hello,\n\nplease change the delivery address for order #7781002 to 500 Market Street, "
        "Berlin. We moved offices last week.\n\nMuchas gracias,\nJosé Peña",
    ),
    (
        "en-api",
        "Priya Patel",
        "priya.patel@wide-world.example",
        "REST API returns 429 too often",
        "Hi,\n\nour integration gets HTTP 429 from /v2/orders after about 20 requests per minute, "
        "while the documentation promises 120. Is our account limited?\n\nPriya",
    ),
    (
        "en-cancel",
        "Lars Søndergaard",
        "lars@tailspin.example",
        "Please cancel our subscription",
        "Hello,\n\nwe are moving to another provider. Please cancel subscription SUB-88120 at the "
        "end of the current billing period and confirm by e-mail.\n\nLars Søndergaard",
    ),
    (
        "en-missing",
        "Emma Clark",
        "emma.clark@example.net",
        "Parcel marked delivered but never arrived",
        "Hi,\n\nthe tracking page for order #6100452 says delivered on Friday, but nothing arrived "
        "and the neighbours have nothing either. What can we do?\n\nEmma",
    ),
    (
        "en-gdpr",
        "Björn Müller",
        "bjoern.mueller@example.com",
        "Request to delete my personal data",
        "Dear Sir or Madam,\n\nunder Art. 17 GDPR I ask you to delete all personal data you hold "
        "about me, account bjoern.mueller, and to confirm the deletion.\n\nBjörn Müller",
    ),
    (
        "en-thanks",
        "Fatima Ahmed",
        "fatima.ahmed@globex.example",
        "Thank you for the quick fix!",
        "Hi,\n\njust wanted to say thanks to Daniel from your team, who fixed our export problem "
        "within an hour. Great service!\n\nFatima",
    ),
    (
        "en-upgrade",
        "Matthew Lee",
        "matthew.lee@contoso.example",
        "Upgrade from Starter to Business",
        "Hello,\n\nhow do we upgrade from the Starter to the Business plan in the middle of the "
        "month? Will the price be prorated?\n\nMatthew Lee",
    ),
]

ZH = [
    (
        "zh-refund",
        "王芳",
        "wangfang@163.example",
        "申请退款：订单 #3381920 重复扣款",
        "您好：\n\n我在11月14日支付订单 #3381920 时被重复扣款两次，每次 299 元。请帮忙退还多扣的款项。\n\n"
        "谢谢！\n王芳",
        "gb2312",
    ),
    (
        "zh-broken",
        "李强",
        "liqiang@qq.example",
        "收到的路由器无法开机",
        "客服您好：\n\n昨天收到的智能路由器X200插上电源后指示灯不亮，换了插座也一样。请问怎么处理？"
        "是否可以换货？\n\n李强",
        "gbk",
    ),
    (
        "zh-invoice",
        "张伟",
        "zhangwei@huaxin-tech.example",
        "请开具增值税专用发票",
        "你好：\n\n我司（深圳华信科技有限公司）上月购买的企业版套餐需要开具增值税专用发票，"
        "开票信息已放在附件中，请尽快处理。\n\n张伟\n财务部",
        "utf-8",
    ),
    (
        "zh-urgent",
        "陈静",
        "chenjing@bjmy.example",
        "紧急：网页后台全部打不开",
        "你好，\n\n从今天早上九点开始，我们公司所有人都打不开网页后台，显示错误代码 502。"
        "客户订单全部卡住了，请立即处理！电话 138 0000 1234。\n\n陈静",
        "gb2312",
    ),
    (
        "zh-suggest",
        "刘洋",
        "liuyang@sina.example",
        "建议：手机客户端增加夜间模式",
        "你们好！\n\n手机客户端用起来很方便，建议增加夜间模式，晚上看屏幕太亮了。谢谢！\n\n刘洋",
        "utf-8",
    ),
    (
        "zh-complaint",
        "赵敏",
        "zhaomin@126.example",
        "投诉：客服一周都没有回复",
        "你好：\n\n我一周前就反映了账单中心金额错误的问题，到现在没有任何回复，非常不满意。"
        "希望尽快给我一个答复。\n\n赵敏",
        "gbk",
    ),
    (
        "zh-sales",
        "黄海燕",
        "huanghy@yuanda-wuliu.example",
        "咨询企业版套餐价格",
        "您好：\n\n我们公司有 120 名员工，想了解企业版套餐的年付价格和团购优惠，方便的话请发一份报价单。\n\n"
        "黄海燕\n上海远大物流有限公司",
        "utf-8",
    ),
    (
        "zh-delivery",
        "周杰",
        "zhoujie@example.cn",
        "订单 #5120388 一直没有发货",
        "您好：\n\n我 11 月 10 日下的订单 #5120388 到现在还显示“待发货”，请问什么时候能发出？\n\n周杰",
        "gb2312",
    ),
    (
        "zh-account",
        "吴娟",
        "wujuan@qq.example",
        "账号被锁定，无法登录",
        "客服你好：\n\n我的账号 wujuan2026 输错几次密码后被锁定了，找回密码的短信也收不到，"
        "麻烦帮忙解锁。\n\n吴娟",
        "gbk",
    ),
    (
        "zh-contract",
        "郭建华",
        "guojh@szkj.example",
        "续签年度服务合同",
        "您好：\n\n我司与贵公司的年度服务合同将于12月31日到期，希望续签并了解明年的价格调整。\n\n"
        "郭建华\n采购部",
        "utf-8",
    ),
    (
        "zh-data",
        "孙丽",
        "sunli@163.example",
        "数据导出工具导出的文件乱码",
        "你好：\n\n用数据导出工具导出的 CSV 文件用 Excel 打开全是乱码，路径是 D:\\导出\\订单.csv，"
        "请问应该怎么设置编码？\n\n孙丽",
        "gb2312",
    ),
    (
        "zh-praise",
        "马超",
        "machao@sina.example",
        "表扬：技术支持非常专业",
        "你们好：\n\n上周技术支持的小林帮我们远程解决了网关配置问题，非常专业耐心，特此表扬！\n\n马超",
        "utf-8",
    ),
]


def _message(
    key: str,
    name: str,
    address: str,
    subject: str,
    body: str,
    charset: str,
    index: int,
    to: str = SUPPORT,
    reply_to_id: str | None = None,
) -> tuple[str, bytes]:
    message = EmailMessage()
    message["From"] = f"{name} <{address}>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(START + timedelta(minutes=37 * index))
    message_id = f"<{key}.{index}@{address.split('@', 1)[1]}>"
    message["Message-ID"] = message_id
    if reply_to_id:
        message["In-Reply-To"] = reply_to_id
        message["References"] = reply_to_id
    cte = "8bit" if charset in ("gbk",) else "base64" if charset != "utf-8" else "quoted-printable"
    message.set_content(body + "\n", charset=charset, cte=cte)
    if key == "zh-invoice":
        info = "单位名称,深圳华信科技有限公司\n税号,91440300MA5F000000\n".encode()
        message.add_attachment(info, maintype="text", subtype="csv", filename="开票信息.csv")
    if key == "en-login":
        message.add_alternative(
            "<html><body><p>Hi team,</p><p>since yesterday's password reset I get "
            "&quot;Invalid session&quot; on the web dashboard.</p></body></html>",
            subtype="html",
        )
    return message_id, message.as_bytes(policy=SMTP)


def samples() -> list[Sample]:
    """The demo's messages: first contacts, follow-ups, a copy to two addresses, a duplicate."""
    result: list[Sample] = []
    ids: dict[str, str] = {}
    index = 0
    for key, name, address, subject, body in EN:
        index += 1
        ids[key], raw = _message(key, name, address, subject, body, "utf-8", index)
        result.append(Sample(key, raw, "imap" if index % 2 else "lmtp"))
    for key, name, address, subject, body, charset in ZH:
        index += 1
        ids[key], raw = _message(key, name, address, subject, body, charset, index)
        result.append(Sample(key, raw, "imap" if index % 2 else "lmtp"))
    follow_ups = [
        (
            "en-invoice",
            "Re: Charged twice for invoice INV-20931",
            "Any update on this? The duplicate charge is still on my statement.",
        ),
        (
            "en-outage",
            "RE: URGENT: sync service down for all users",
            "Still down after 2 hours. We are escalating this internally.",
        ),
        (
            "zh-broken",
            "回复：收到的路由器无法开机",
            "请问换货流程是怎样的？需要我把路由器寄回哪里？",
        ),
        ("zh-complaint", "回复：投诉：客服一周都没有回复", "已经又过去两天了，还是没有人联系我。"),
    ]
    for key, subject, body in follow_ups:
        index += 1
        original = next(s for s in (EN + [z[:5] for z in ZH]) if s[0] == key)
        charset = next((z[5] for z in ZH if z[0] == key), "utf-8")
        _, raw = _message(
            f"{key}-re",
            original[1],
            original[2],
            subject,
            body,
            charset,
            index,
            reply_to_id=ids[key],
        )
        result.append(Sample(f"{key}-re", raw, "imap"))
    index += 1
    _, raw = _message(
        "en-both",
        "Ingrid Larsen",
        "ingrid.larsen@example.org",
        "Partner programme and a billing question",
        "Hello,\n\nwe would like to join your partner programme, and I also have a "
        "question about our last invoice. Who can help?\n\nIngrid",
        "utf-8",
        index,
        to=f"{SALES}, {SUPPORT}",
    )
    result.append(Sample("en-both", raw, "lmtp", (SALES, SUPPORT)))
    duplicate = next(s for s in result if s.key == "en-quote")
    result.append(Sample("en-quote-again", duplicate.raw, "lmtp"))
    return result


def variants(count: int) -> list[bytes]:
    """count distinct messages made from the samples, for load tests.

    Each round through the samples gets its own Message-IDs, so follow-ups still thread.
    """
    base = [s.raw for s in samples() if not s.key.endswith("again")]
    result = []
    for i in range(count):
        head, _, body = base[i % len(base)].partition(b"\r\n\r\n")
        lines = [
            line.replace(b"@", f".r{i // len(base)}@".encode(), 1)
            if line.lower().startswith((b"message-id:", b"in-reply-to:", b"references:"))
            else line
            for line in head.split(b"\r\n")
        ]
        result.append(b"\r\n".join([*lines, f"X-Sequence: {i}".encode()]) + b"\r\n\r\n" + body)
    return result
