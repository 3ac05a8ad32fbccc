CREATE TABLE "desktop_handoffs" (
	"code_hash" text PRIMARY KEY NOT NULL,
	"desktop_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"session_id" text NOT NULL,
	"grant_id" uuid,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "desktop_shares" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"desktop_id" uuid NOT NULL,
	"kind" text NOT NULL,
	"user_id" uuid,
	"mode" text NOT NULL,
	"secret_hash" text,
	"created_by" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone,
	CONSTRAINT "desktop_shares_kind_check" CHECK (("desktop_shares"."kind" = 'user' and "desktop_shares"."user_id" is not null and "desktop_shares"."secret_hash" is null) or ("desktop_shares"."kind" = 'link' and "desktop_shares"."user_id" is null and "desktop_shares"."secret_hash" is not null)),
	CONSTRAINT "desktop_shares_mode_check" CHECK ("desktop_shares"."mode" in ('view', 'control'))
);
--> statement-breakpoint
CREATE TABLE "share_link_visitors" (
	"share_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"first_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "share_link_visitors_share_id_user_id_pk" PRIMARY KEY("share_id","user_id")
);
--> statement-breakpoint
ALTER TABLE "desktop_handoffs" ADD CONSTRAINT "desktop_handoffs_desktop_id_desktops_id_fk" FOREIGN KEY ("desktop_id") REFERENCES "public"."desktops"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "desktop_handoffs" ADD CONSTRAINT "desktop_handoffs_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "desktop_handoffs" ADD CONSTRAINT "desktop_handoffs_grant_id_desktop_shares_id_fk" FOREIGN KEY ("grant_id") REFERENCES "public"."desktop_shares"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "desktop_shares" ADD CONSTRAINT "desktop_shares_desktop_id_desktops_id_fk" FOREIGN KEY ("desktop_id") REFERENCES "public"."desktops"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "desktop_shares" ADD CONSTRAINT "desktop_shares_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "desktop_shares" ADD CONSTRAINT "desktop_shares_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "share_link_visitors" ADD CONSTRAINT "share_link_visitors_share_id_desktop_shares_id_fk" FOREIGN KEY ("share_id") REFERENCES "public"."desktop_shares"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "share_link_visitors" ADD CONSTRAINT "share_link_visitors_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "desktop_handoffs_expires_at_idx" ON "desktop_handoffs" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "desktop_shares_desktop_id_idx" ON "desktop_shares" USING btree ("desktop_id");--> statement-breakpoint
CREATE UNIQUE INDEX "desktop_shares_user_key" ON "desktop_shares" USING btree ("desktop_id","user_id");--> statement-breakpoint
CREATE UNIQUE INDEX "desktop_shares_secret_key" ON "desktop_shares" USING btree ("secret_hash");--> statement-breakpoint
CREATE INDEX "share_link_visitors_user_id_idx" ON "share_link_visitors" USING btree ("user_id");